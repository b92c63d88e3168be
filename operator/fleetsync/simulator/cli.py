"""``fleetsync simulate``: the vendor simulator as a command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from fleetsync.api.constants import ExitCode
from fleetsync.simulator.config import SimulatorConfig, VendorConfig
from fleetsync.simulator.server import Simulator

__all__ = ["simulate_command"]


async def _serve(config: SimulatorConfig) -> None:
    simulator = Simulator(config)
    try:
        url = await simulator.start()
    except OSError as error:
        await simulator.stop()
        # One line and exit 75 (the port may be free again soon), never a traceback.
        why = os.strerror(error.errno) if error.errno else str(error)
        click.echo(
            f"error: --port: cannot listen on {config.host}:{config.port} ({why}) (fix: another"
            " simulator may be running there; stop it, or pick another --port, 0: any free one)",
            err=True,
        )
        raise SystemExit(ExitCode.INTERRUPTED) from None
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
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A SimulatorConfig as YAML or JSON (per-vendor settings); the vendor flags are ignored.",
)
@click.option("--host", default=None, help="Default 127.0.0.1 (loopback only).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Default 0: any free port (printed). The examples expect 8765.",
)
@click.option(
    "--vendors",
    default="sungrow,huawei,solaredge",
    show_default=True,
    help="Comma-separated names; each serves /vendors/<name>/<kind>/<id>.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Median response time; the 99th percentile is four times it.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of requests answered 500 or 503 (at random, seeded).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Requests per second each vendor accepts; more get 429 with Retry-After.",
)
@click.option(
    "--malformed-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of ids (chosen by hash, so the same ones every time) whose payload is"
    " broken JSON or lacks fields: these end as dead letters.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds payloads and random choices."
)
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
