"""``fleetsync simulate``: the vendor simulator as a command."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from fleetsync.simulator.config import SimulatorConfig, VendorConfig
from fleetsync.simulator.server import Simulator

__all__ = ["simulate_command"]


async def _serve(config: SimulatorConfig) -> None:
    simulator = Simulator(config)
    url = await simulator.start()
    click.echo(f"listening on {url}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


@click.command("simulate")
@click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--host", default=None, help="Default 127.0.0.1 (loopback only).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="0: any free port.")
@click.option("--vendors", default="sungrow,huawei,solaredge", show_default=True)
@click.option("--latency-ms", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--malformed-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_command(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    vendors: str,
    latency_ms: float,
    error_rate: float,
    rate_limit: float | None,
    malformed_rate: float,
    seed: int,
) -> None:
    """Play several vendors' HTTP APIs on loopback (latency, errors, 429s, outages)."""
    try:
        if config_file is not None:
            text = config_file.read_text()
            raw = json.loads(text) if config_file.suffix == ".json" else yaml.safe_load(text)
            config = SimulatorConfig.model_validate(raw)
        else:
            vendor = VendorConfig.model_validate(
                {
                    "latency": {"p50Ms": latency_ms, "p99Ms": latency_ms * 4},
                    "errorRate": error_rate,
                    "malformedRate": malformed_rate,
                    "rateLimit": {"requestsPerSecond": rate_limit} if rate_limit else None,
                }
            )
            names = [n.strip() for n in vendors.split(",") if n.strip()]
            if not names:
                raise click.BadParameter("name at least one vendor", param_hint="--vendors")
            config = SimulatorConfig(vendors=dict.fromkeys(names, vendor), seed=seed)
        updates: dict[str, object] = {}
        if host is not None:
            updates["host"] = host
        if port is not None:
            updates["port"] = port
        config = config.model_copy(update=updates)
        config.check_host()
    except (ValidationError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    asyncio.run(_serve(config))
