"""``fleetsync demo`` (and ``make demo``): the quickstart with nothing but the Python install.

Starts the bundled vendor simulator with three vendors, writes a SyncJob for it, and runs it
into SQLite — the same manifest shape a user would ``kubectl apply``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import yaml

from fleetsync.local.console import run_with_console
from fleetsync.local.runner import RunOptions
from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

__all__ = ["demo_manifest", "run_demo"]

VENDORS = ("sungrow", "huawei", "solaredge")


def demo_manifest(simulator_url: str, *, items: int, db: Path) -> dict[str, object]:
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "demo-plants"},
        "spec": {
            "fleet": {
                "kind": "plant",
                "key": "id",
                "inventory": {
                    "generate": {
                        "count": items,
                        "idTemplate": "p-{i}",
                        "template": {"vendor": "{i%3}"},
                    }
                },
            },
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime"},
                "vendors": {
                    "by": "vendor",
                    "items": {
                        str(i): {"baseUrl": f"{simulator_url}/vendors/{name}"}
                        for i, name in enumerate(VENDORS)
                    },
                },
                "mapping": {
                    "current_power_kw": "$.data.power",
                    "daily_energy_kwh": "$.data.today",
                    "total_energy_mwh": "$.data.total",
                    "is_online": "$.data.online",
                    "updated_at": "$.data.updated_at",
                },
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
            "write": {"monotonicOn": "updated_at"},
        },
    }


def run_demo(*, items: int, output: str, db: Path) -> int:
    config = SimulatorConfig(
        vendors={name: VendorConfig(latency={"p50Ms": 20, "p99Ms": 60}) for name in VENDORS}
    )
    with SimulatorProcess(config) as simulator, tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "demo-plants.yaml"
        manifest.write_text(yaml.safe_dump(demo_manifest(simulator.url, items=items, db=db)))
        code = run_with_console(
            RunOptions(manifest=manifest, state_dir=Path(tmp) / "state"), output=output
        )
    if output == "text":
        with sqlite3.connect(db) as connection:
            (rows,) = connection.execute("SELECT count(*) FROM plants").fetchone()
        print(f"{db} now holds {rows} plants: sqlite3 {db} 'SELECT * FROM plants LIMIT 5'")
    return code
