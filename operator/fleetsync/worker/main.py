"""``fleetsync worker``: one shard as a process, with the exit codes the Job relies on.

0 = shard done; 64 = invalid config (never retried); 75 = interrupted by SIGTERM with the
checkpoint handed to the coordinator (a replacement resumes); 1 = the shard's books did not
balance (an item without an outcome: reported as ``failed`` with the counts), its sink could
not be reached (retried by the Job), or a crash.

A shard that cannot start (its config refused, its sink unreachable) says why in one log
line and in a ``failed`` report whose ``error`` is that line, so ``fleetsync run``'s message
and the controller's status carry it rather than "see the logs".
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleetsync.api.constants import ExitCode
from fleetsync.api.manifest import load_spec
from fleetsync.api.progress import ErrorWire, ReplyWire, ReportWire
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.collector import tune_for_shards
from fleetsync.coordination.protocol import Coordinator, NoCoordinator
from fleetsync.errors import ManifestError, SinkError, describe
from fleetsync.worker.coordination import HttpCoordinator
from fleetsync.worker.engine import EngineResult, ShardEngine, ShardPlan
from fleetsync.worker.fetch import AllowedHosts, Fetcher
from fleetsync.worker.inventory import first_items
from fleetsync.worker.loop import run_loop
from fleetsync.worker.reporting import REPORT_BACKOFF, ShardProgress, shard_report
from fleetsync.worker.requests import RequestBuilder, template_problems
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.sinkfactory import build_sink

if TYPE_CHECKING:  # a run without /metrics never imports prometheus_client
    import httpx

    from fleetsync.metrics import WorkerMetrics

__all__ = [
    "WorkerOptions",
    "allowed_hosts",
    "load_spec",
    "run_shard",
    "shard_results",
    "worker_main",
]

log = logging.getLogger("fleetsync.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    manifest: Path
    shard: tuple[int, ...]  # this process's shards: one in a pod; locally, several may share one
    shards: int
    run: str | None = None
    pod: str | None = None
    coordinator_url: str | None = None
    token_file: Path | None = None
    secrets_dir: str | None = None
    config_map_dir: Path | None = None
    transport: str = "aiohttp"
    metrics_port: int | None = None  # serve /metrics here (pods: scraped by a PodMonitor)
    namespace: str = ""
    owner: str | None = None  # SyncSchedule, or the SyncJob when unscheduled


def allowed_hosts(spec: SyncJobSpec) -> AllowedHosts:
    http = spec.source.http
    if http.allowed_hosts is not None:
        return AllowedHosts(http.allowed_hosts)
    hosts: set[str] = set()
    urls = [http.url]
    if spec.source.vendors:
        urls += [v.base_url for v in spec.source.vendors.items.values() if v.base_url]
    if http.auth is not None and http.auth.oauth2 is not None:
        urls.append(http.auth.oauth2.token_url)
    if spec.fleet.inventory.http is not None:
        urls.append(spec.fleet.inventory.http.url)
    for url in urls:
        host = AllowedHosts.host_of(url)
        if host is not None:
            hosts.add(host)
    return AllowedHosts(hosts)


async def run_shard(
    spec: SyncJobSpec,
    plan: ShardPlan,
    *,
    secrets: SecretResolver,
    coordinator: Coordinator,
    transport: str | httpx.AsyncBaseTransport = "aiohttp",
    stop: asyncio.Event | None = None,
    metrics: WorkerMetrics | None = None,
) -> EngineResult:
    """Run one shard. Setting ``stop`` (SIGTERM) interrupts it gracefully, at any point.

    Templates naming a field the inventory's first items lack would fail every item: they
    are refused first (ManifestError, exit 64), before any vendor is called."""
    stop = stop or asyncio.Event()
    sink = build_sink(spec, secrets=secrets, base_dir=plan.base_dir)
    max_connections = spec.source.concurrency.max * 4
    fetcher = Fetcher(
        allowed=allowed_hosts(spec),
        timeout_seconds=spec.source.http.timeout_seconds,
        max_connections=max_connections,
        transport=transport,
        max_response_bytes=spec.source.http.max_response_bytes,
    )
    try:
        await _check_templates(spec, plan, fetcher)
        requests = RequestBuilder(spec.source, secrets=secrets, fetcher=fetcher)
        # A replacement has no checkpoint of its own yet: it says so (None), so it can never
        # overwrite the one its predecessor left, and resumes from the one in the reply.
        hello = shard_report(
            plan,
            seq=1,
            state="starting",
            progress=ShardProgress(seen=0, shard_total=None, checkpoint=None),
            cost=sink.cost,
        )
        reply = await _first_contact(coordinator, hello, rng=random.Random())
        engine = ShardEngine(
            spec,
            plan,
            sink=sink,
            fetcher=fetcher,
            requests=requests,
            coordinator=coordinator,
            resume=reply["resume"] if reply else None,
            metrics=metrics,
            stop=stop,
            report_seq=hello["seq"],
        )
        await sink.open()
        try:
            return await engine.run()
        finally:
            await sink.close()
    finally:
        await fetcher.aclose()


async def _check_templates(spec: SyncJobSpec, plan: ShardPlan, fetcher: Fetcher) -> None:
    items = await first_items(
        spec.fleet.inventory,
        key=spec.fleet.key,
        base_dir=plan.base_dir,
        http_client=lambda: fetcher.client,
        config_map_dir=plan.config_map_dir,
    )
    problems = template_problems(spec, items) if items else []
    if problems:
        raise ManifestError(problems, hint="use a field the inventory's items have")


async def _first_contact(
    coordinator: Coordinator, hello: ReportWire, *, rng: random.Random, tries: int = 4
) -> ReplyWire | None:
    # A few tries: the coordinator may be starting. Without it the shard starts from scratch.
    for attempt in range(1, tries + 1):
        try:
            reply = await coordinator.report(hello)
        except Exception as error:
            log.warning("coordinator not reachable yet: %s", type(error).__name__)
            reply = None
        if reply is not None or not coordinator.keeps_reports:
            return reply
        if attempt < tries:
            await asyncio.sleep(REPORT_BACKOFF.delay(attempt, rng))
    return None


async def _main(options: WorkerOptions) -> int:
    name, spec = load_spec(options.manifest)
    pod = options.pod or f"{socket.gethostname()}-{os.getpid()}"
    plans = [
        ShardPlan(
            run=options.run or name,
            shard=shard,
            shards=options.shards,
            # Each shard is its own holder of leases and its own reporter.
            pod=pod if len(options.shard) == 1 else f"{pod}-{shard}",
            base_dir=options.manifest.parent,
            config_map_dir=options.config_map_dir,
        )
        for shard in options.shard
    ]
    coordinator: Coordinator = (
        HttpCoordinator(options.coordinator_url, token_file=options.token_file)
        if options.coordinator_url
        else NoCoordinator()
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    metrics = None
    if options.metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        from fleetsync.metrics import WorkerMetrics

        registry = CollectorRegistry()
        metrics = WorkerMetrics.create(
            registry, namespace=options.namespace, owner=options.owner or plans[0].run
        )
        try:
            start_http_server(options.metrics_port, registry=registry)
        except OSError as error:  # metrics are not worth failing a shard for
            log.warning("cannot serve metrics on port %d: %s", options.metrics_port, error)

    def on_sigterm() -> None:
        log.info("SIGTERM: finishing in-flight items, then exiting 75")
        stop.set()

    async def one(plan: ShardPlan) -> EngineResult:
        try:
            return await run_shard(
                spec,
                plan,
                secrets=SecretResolver(options.secrets_dir),
                coordinator=coordinator,
                transport=options.transport,
                stop=stop,
                metrics=metrics,
            )
        except (ManifestError, SinkError) as error:
            await _report_failure(coordinator, plan, error)
            raise

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        outcomes = await asyncio.gather(*(one(plan) for plan in plans), return_exceptions=True)
    finally:
        await coordinator.aclose()
    results = shard_results(outcomes)
    failed = [result for result in results if result.state == "failed"]
    for result in failed:
        log.error("shard failed: %s", result.error)
    if failed:
        return ExitCode.FAILED
    return ExitCode.OK if all(r.state == "done" for r in results) else ExitCode.INTERRUPTED


def shard_results(outcomes: Sequence[EngineResult | BaseException]) -> list[EngineResult]:
    """The shards' results, gathered with ``return_exceptions``; if any shard raised, the
    first configuration error (it is every shard's), else the first error, is raised."""
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise next((e for e in errors if isinstance(e, ManifestError)), errors[0])
    return [o for o in outcomes if not isinstance(o, BaseException)]


def failure_text(error: BaseException) -> str:
    """One line: ``<field>: <reason> (fix: <hint>)``, as the CLI prints it."""
    field, reason, hint = describe(error)
    text = f"{field}: {reason}" if field else reason
    return text + (f" (fix: {hint})" if hint else "")


async def _report_failure(coordinator: Coordinator, plan: ShardPlan, error: Exception) -> None:
    """Tell the coordinator why this shard cannot start: its report's ``error``."""
    report = shard_report(
        plan,
        seq=2,  # after the hello (1); a shard that fails at the start sends nothing else
        state="failed",
        progress=ShardProgress(seen=0, shard_total=None, checkpoint=None),
    )
    report["error"] = failure_text(error)
    if isinstance(error, ManifestError):
        field, reason, hint = describe(error)
        report["errorDetail"] = ErrorWire(field=field, reason=reason, hint=hint)
    try:
        await coordinator.report(report)
    except Exception as failure:  # the exit code and the log line still say it
        log.warning("could not report the failure: %s", type(failure).__name__)


def worker_main(options: WorkerOptions) -> int:
    tune_for_shards()
    try:
        return run_loop(_main(options))
    except ManifestError as error:
        log.error("invalid configuration: %s", failure_text(error))
        return ExitCode.INVALID_CONFIG
    except SinkError as error:
        log.error("sink unusable: %s", failure_text(error))
        return ExitCode.FAILED
