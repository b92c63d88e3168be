"""The ``fleetsync`` command line: run, demo, simulate, worker, status, retry-failed.

Exit codes follow ``shared/API.md``: 0 Succeeded, 2 PartiallySucceeded, 1 Failed, 64 for an
invalid manifest *and* for usage errors (click's own default of 2 would read as "partial"),
75 for infrastructure a run needs that is down but may recover (a sink, a port in use).
An error a user can cause or meet ends in one line naming the field and the fix
(:func:`_failure`), never a traceback; with ``--output json`` stdout's last line is
``{"phase": "Failed", "error": {"field", "reason", "hint"}}``.

Every command imports what it needs inside its own body, and ``simulate`` is resolved only
when it is invoked: ``fleetsync --help`` (and every worker process's start) must not pay for
aiohttp, httpx, pydantic models, boto3 or kopf it does not use (issue 17; the simulator
package alone costs ~0.6 s of imports). ``tests/unit/test_cli_start.py`` holds this.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from fleetsync import __version__, collector
from fleetsync.api.constants import MAX_SHARDS, ExitCode
from fleetsync.errors import FleetsyncError, ManifestError, PermanentError, describe

__all__ = ["cli", "main"]


# Options several commands share, written once so their names, defaults and help agree.
output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: live progress and a summary; json: one summary line (the last on stdout).",
)


FC = TypeVar("FC", bound=Callable[..., object])
_SECRETS_HELP = "Secrets the manifest references, as <name>/<key> files."


def secrets_dir_option(help: str = _SECRETS_HELP) -> Callable[[FC], FC]:
    return click.option("--secrets-dir", type=click.Path(file_okay=False), help=help)


def _failure(error: BaseException, output: str = "text") -> int:
    """Say what failed in one line (``error: <field>: <reason> (fix: <hint>)``) and return
    the exit code: 64 when the configuration must change, 75 when the infrastructure may
    recover. With ``--output json``, the same as an ``error`` object on stdout."""
    field, reason, hint = describe(error)
    config = isinstance(error, PermanentError | FileNotFoundError | PermissionError)
    code = ExitCode.INVALID_CONFIG if config else ExitCode.INTERRUPTED
    line = f"error: {field}: {reason}" if field else f"error: {reason}"
    click.echo(line + (f" (fix: {hint})" if hint else ""), err=True)
    if output == "json":
        wire = {"field": field, "reason": reason, "hint": hint}
        click.echo(json.dumps({"phase": "Failed", "error": wire}, separators=(",", ":")))
    return code


def _manifest_error(error: ManifestError) -> int:
    return _failure(error)


# What ``run`` and its kin turn into one line: errors fleetsync raises on purpose, and the
# file system's (a state dir or inventory it cannot read or write).
_SAID = (FleetsyncError, OSError)


# Commands defined in other packages, imported only when invoked: name -> (module, attribute,
# the one-line help shown by ``fleetsync --help`` without importing the module).
_LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "simulate": (
        "fleetsync.simulator.cli",
        "simulate_command",
        "Play several vendors' HTTP APIs on loopback (latency, errors, 429s, outages).",
    ),
}


class _LazyGroup(click.Group):
    """A group whose ``_LAZY_COMMANDS`` are imported on first use, not at start."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in _LAZY_COMMANDS:
            return command
        module_name, attribute, _ = _LAZY_COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an install without that part: the command does not exist
            return None
        loaded = getattr(module, attribute)
        assert isinstance(loaded, click.Command)
        self.add_command(loaded, cmd_name)
        return loaded

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            # A lazy command not yet imported is listed by a stand-in carrying its help line.
            command = self.commands.get(name) or click.Command(name, help=_LAZY_COMMANDS[name][2])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetsync")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Keep fleets in sync: vendor APIs into DynamoDB, PostgreSQL or SQLite."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shards", type=click.IntRange(1, MAX_SHARDS), help="Override spec.sharding.shards.")
@click.option(
    "--parallelism",
    type=click.IntRange(1, 1000),
    help="Shards running at once, each in its own process.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_SHARDS),
    help="Worker processes the shards share (default: one per core, at most one per shard).",
)
@output_option
@secrets_dir_option()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".fleetsync",
    show_default=True,
    help="Where runs keep progress, logs and pid files; an interrupted run resumes from it.",
)
@click.option("--restart", is_flag=True, help="Start over instead of resuming an interrupted run.")
@click.option(
    "--transport", type=click.Choice(["aiohttp", "httpx"]), default="aiohttp", hidden=True
)
def run(
    manifest: Path,
    shards: int | None,
    parallelism: int | None,
    processes: int | None,
    output: str,
    secrets_dir: str | None,
    state_dir: Path,
    restart: bool,
    transport: str,
) -> None:
    """Run a SyncJob manifest (or one run of a SyncSchedule) on this machine.

    Interrupted (Ctrl-C, a kill), it resumes from its last checkpoint when run again with the
    same manifest and state dir; --restart starts over.
    """
    collector.hold()  # until the event loop starts: fleetsync/collector.py
    from fleetsync.local.console import run_with_console
    from fleetsync.local.runner import RunOptions

    options = RunOptions(
        manifest=manifest.resolve(),
        shards=shards,
        parallelism=parallelism,
        processes=processes,
        secrets_dir=secrets_dir,
        state_dir=state_dir,
        transport=transport,
        restart=restart,
    )
    try:
        code = run_with_console(options, output=output)
    except _SAID as error:
        code = _failure(error, output)
    sys.exit(code)


@cli.command()
@click.option(
    "--items",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Plants to sync (spread over the three simulated vendors).",
)
@output_option
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("demo.db"),
    show_default=True,
    help="The SQLite file to write (table plants), relative to the current directory.",
)
def demo(items: int, output: str, db: Path) -> None:
    """The quickstart: start the vendor simulator and sync a fleet into SQLite."""
    collector.hold()  # until the event loop starts: fleetsync/collector.py
    from fleetsync.local.demo import run_demo

    sys.exit(run_demo(items=items, output=output, db=db.resolve()))


@cli.command()
@click.option(
    "--manifest",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SyncJob (or SyncSchedule) manifest; in a pod, mounted from the run's ConfigMap.",
)
@click.option(
    "--shard",
    type=click.IntRange(0, MAX_SHARDS - 1),
    multiple=True,
    default=lambda: [int(os.environ.get("JOB_COMPLETION_INDEX", "0"))],
    help="This shard's index (default: the Indexed Job's JOB_COMPLETION_INDEX); repeat it to "
    "run several shards in this process.",
)
@click.option(
    "--shards", type=click.IntRange(1, MAX_SHARDS), default=1, help="How many shards the run has."
)
@click.option("--run", "run_name", help="Run name (default: the manifest's name).")
@click.option(
    "--pod",
    default=lambda: os.environ.get("POD_NAME"),
    help="This pod's name, sent with every report (default: POD_NAME).",
)
@click.option(
    "--coordinator",
    envvar="FLEETSYNC_COORDINATOR_URL",
    help="Where to report progress (the controller, or `fleetsync run`); none: standalone.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bearer token for reports, read at each report (a projected service-account token).",
)
@click.option(
    "--secrets-dir",
    envvar="FLEETSYNC_SECRETS_DIR",
    help="Secrets the manifest references, as <name>/<key> files (mounted Secrets in a pod).",
)
@click.option(
    "--config-map-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where ConfigMap inventories are mounted, as <name>/<key> files.",
)
@click.option(
    "--transport",
    type=click.Choice(["aiohttp", "httpx"]),
    default="aiohttp",
    help="HTTP client for vendor requests.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="FLEETSYNC_METRICS_PORT",
    help="Serve Prometheus /metrics on this port.",
)
@click.option(
    "--namespace", default="", envvar="POD_NAMESPACE", help="Metrics label: the namespace."
)
@click.option("--owner", envvar="FLEETSYNC_OWNER", help="Metrics label: schedule or SyncJob.")
def worker(
    manifest: Path,
    shard: tuple[int, ...],
    shards: int,
    run_name: str | None,
    pod: str | None,
    coordinator: str | None,
    token_file: Path | None,
    secrets_dir: str | None,
    config_map_dir: Path | None,
    transport: str,
    metrics_port: int | None,
    namespace: str,
    owner: str | None,
) -> None:
    """One shard of a run (the container entrypoint of worker pods)."""
    collector.hold()  # until the event loop starts: fleetsync/collector.py
    from fleetsync.worker.main import WorkerOptions, worker_main

    if any(index >= shards for index in shard):
        raise click.BadParameter(f"each must be below --shards ({shards})", param_hint="--shard")

    logging.getLogger("fleetsync").setLevel(logging.INFO)
    options = WorkerOptions(
        manifest=manifest,
        shard=tuple(dict.fromkeys(shard)),
        shards=shards,
        run=run_name,
        pod=pod,
        coordinator_url=coordinator,
        token_file=token_file,
        secrets_dir=secrets_dir,
        config_map_dir=config_map_dir,
        transport=transport,
        metrics_port=metrics_port,
        namespace=namespace,
        owner=owner,
    )
    sys.exit(worker_main(options))


@cli.command()
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these (repeat).")
@click.option("--listen", default="0.0.0.0:8080", show_default=True, help="Reports, /metrics.")
@click.option(
    "--report-url",
    envvar="FLEETSYNC_REPORT_URL",
    required=True,
    help="The URL worker pods use to reach this controller (its Service).",
)
@click.option(
    "--worker-image",
    envvar="FLEETSYNC_WORKER_IMAGE",
    required=True,
    help="Image of the shard pods (a SyncJob's spec.worker.image overrides it).",
)
@click.option(
    "--worker-service-account",
    default="fleetsync-worker",
    show_default=True,
    help="ServiceAccount of the shard pods (spec.worker.serviceAccountName overrides it).",
)
@click.option(
    "--worker-command",
    default="fleetsync",
    show_default=True,
    help="The worker container's command (the image's entrypoint).",
)
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Outside a cluster only.")
@click.option(
    "--clock-file",
    type=click.Path(dir_okay=False, path_type=Path),
    hidden=True,
    help="Tests only: read the current time (epoch seconds) from this file.",
)
def controller(
    namespaces: tuple[str, ...],
    listen: str,
    report_url: str,
    worker_image: str,
    worker_service_account: str,
    worker_command: str,
    kubeconfig: str | None,
    clock_file: Path | None,
) -> None:
    """The operator: reconcile SyncJobs and SyncSchedules (the controller's entrypoint)."""
    from fleetsync.controller.build import WorkerSettings
    from fleetsync.controller.main import ControllerOptions, controller_main

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    options = ControllerOptions(
        namespaces=namespaces,
        listen_host=host,
        listen_port=int(port),
        worker=WorkerSettings(
            image=worker_image,
            report_url=report_url,
            command=(worker_command,),
            service_account=worker_service_account,
        ),
        kubeconfig=kubeconfig,
        clock_file=clock_file,
    )
    sys.exit(controller_main(options))


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
def validate(manifest: Path) -> None:
    """Check a manifest; print each problem with its field path.

    Beyond the schema, the templates (URL, headers, Secret key, DynamoDB key) are checked
    against the inventory's first items when it can be read here (inline, generate, file);
    a manifest without ``spec.sink`` is valid and says where its data will go."""
    import asyncio

    from fleetsync.api.manifest import load_manifest_file
    from fleetsync.api.v1alpha1 import SyncSchedule
    from fleetsync.local.checks import check_templates, default_sink

    try:
        loaded = load_manifest_file(manifest)
        spec = loaded.spec.job_template.spec if isinstance(loaded, SyncSchedule) else loaded.spec
        read = asyncio.run(check_templates(spec, manifest.resolve().parent))
    except _SAID as error:
        sys.exit(_failure(error))
    if spec.sink is None:
        where = default_sink(spec, manifest.resolve().parent)
        click.echo(f"note: spec.sink is not set: {where}", err=True)
    if not read:
        click.echo(
            "note: inventory not read here; templates are checked at the run's start", err=True
        )
    click.echo(f"{loaded.kind}/{loaded.metadata.name}: valid")


@cli.command("dead-letters")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "run_name",
    help="Run name (default: the manifest's metadata.name; retry-failed runs are <name>-retry).",
)
@secrets_dir_option("Secrets for the sink (e.g. a PostgreSQL DSN) as <name>/<key> files.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".fleetsync"),
    show_default=True,
    help="Where `fleetsync run` kept its runs (runs/<name>/): a run named there is known.",
)
@click.option(
    "--group",
    is_flag=True,
    help="One line per cause with its count and an example, most frequent first.",
)
def dead_letters(
    manifest: Path, run_name: str | None, secrets_dir: str | None, state_dir: Path, group: bool
) -> None:
    """List a run's dead letters (key, attempts, cause, reason) as JSON lines.

    The cause is the reason without its per-item details (``sungrow: HTTP 503``); --group
    counts the letters by it. An unknown --run (no dead letters under that name and no
    local run of it) exits 64.
    """
    import asyncio

    from fleetsync.local.retry import read_dead_letters

    try:
        letters = asyncio.run(read_dead_letters(manifest.resolve(), run_name, secrets_dir))
    except _SAID as error:
        sys.exit(_failure(error))
    if not letters and run_name is not None and not (state_dir / "runs" / run_name).is_dir():
        click.echo(
            f"error: --run {run_name}: no dead letters under that run name in the sink, and no"
            f" local run of it in {state_dir}/runs (a run is named by the manifest's"
            " metadata.name; a retry-failed run by <name>-retry)",
            err=True,
        )
        sys.exit(ExitCode.INVALID_CONFIG)
    from fleetsync.api.progress import cause_of

    if group:
        from fleetsync.local.checks import cause_groups

        for line in cause_groups([(letter.key, letter.reason) for letter in letters]):
            click.echo(line)
        return
    for letter in letters:
        wire = {"key": letter.key, "attempts": letter.attempts, "cause": cause_of(letter.reason)}
        click.echo(json.dumps({**wire, "reason": letter.reason}))


@cli.command("retry-failed")
@click.argument("target")
@click.option("--run", "run_name", help="Run whose dead letters to retry (default: manifest's).")
@output_option
@secrets_dir_option()
@click.option(
    "-n",
    "--namespace",
    help="TARGET is a SyncJob in this namespace of the cluster, not a manifest file.",
)
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="With --namespace, outside a cluster: the kubeconfig (default ~/.kube/config).",
)
def retry_failed(
    target: str,
    run_name: str | None,
    output: str,
    secrets_dir: str | None,
    namespace: str | None,
    kubeconfig: str | None,
) -> None:
    """Run again over a run's dead-lettered items only.

    TARGET is a manifest file (a local run: synced items leave the dead letters), or with
    --namespace a SyncJob in the cluster: a new SyncJob <name>-retry-<n> is created over
    its dead letters.
    """
    if namespace is not None:
        import asyncio

        from fleetsync.controller.retry import retry_failed_in_cluster

        created = asyncio.run(
            retry_failed_in_cluster(
                target, namespace, kubeconfig=kubeconfig, secrets_dir=secrets_dir
            )
        )
        click.echo(f"syncjob/{created} created" if created else f"{target} has no dead letters")
        sys.exit(0)
    from fleetsync.local.retry import retry_failed_locally

    manifest = Path(target)
    try:
        code = retry_failed_locally(manifest.resolve(), run_name, output, secrets_dir)
    except _SAID as error:
        code = _failure(error, output)
    sys.exit(code)


@cli.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per CRD here instead of one YAML stream to stdout.",
)
@click.option(
    "--chart-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the Helm chart's templated copies here (charts/fleetsync/templates/crds).",
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the API reference (markdown) here.",
)
def crds(output_dir: Path | None, chart_dir: Path | None, reference: Path | None) -> None:
    """Print the CustomResourceDefinitions generated from the typed API."""
    import yaml

    from fleetsync.api.crd import build_crds, chart_crd_text, crd_file_text

    if reference is not None:
        from fleetsync.api.reference import api_reference

        reference.write_text(api_reference())

    documents = build_crds()
    if output_dir is None and chart_dir is None and reference is None:
        click.echo(yaml.safe_dump_all(documents, sort_keys=False), nl=False)
        return
    for document in documents:
        name = document["metadata"]["name"]
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / f"{name}.yaml").write_text(crd_file_text(document))
        if chart_dir is not None:
            chart_dir.mkdir(parents=True, exist_ok=True)
            (chart_dir / f"{name}.yaml").write_text(chart_crd_text(document))


def main(argv: list[str] | None = None) -> int:
    """Entry point: click without its exit-code conventions (usage errors exit 64, not 2)."""
    try:
        return _main(argv)
    finally:
        collector.release(freeze=False)  # a command that ended before its event loop


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="fleetsync", standalone_mode=False)
    except click.UsageError as error:
        error.show()
        return ExitCode.INVALID_CONFIG
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return ExitCode.FAILED
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else ExitCode.FAILED
    except BrokenPipeError:
        # `fleetsync … | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return ExitCode.OK
    return ExitCode.OK
