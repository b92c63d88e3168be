"""Run every shard of a manifest on this machine, supervised like a Job would supervise pods.

Shards run in ``fleetsync worker`` processes, several to a process (a single shard runs
inside this process, which saves a second of start-up on small fleets; so do all the shards
of a run its rate limits hold to :data:`IN_PROCESS_RATE`). Exit 75 (interrupted) is resumed
from the checkpoint without counting as a failure; a crash or SIGKILL is retried up to
``backoff_limit`` times per shard, also from the checkpoint; exit 64 fails the run.

A run interrupted as a whole (Ctrl-C, ``kill -9``) resumes when started again: the progress
lives in the state dir (:mod:`fleetsync.local.state`). Workers run in their own session, so
a terminal's Ctrl-C reaches only this process, which asks each of them to checkpoint and
report before it summarises; on Linux they also die with it if it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleetsync.api.constants import ExitCode, Phase, Reason
from fleetsync.api.limits import rate_bound
from fleetsync.api.manifest import load_spec
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.coordination.phase import final_phase
from fleetsync.coordination.progress import RunProgress, expected_total
from fleetsync.errors import ManifestError
from fleetsync.local.coordinator import InProcessCoordinator, LocalCoordinator
from fleetsync.local.state import RunState, fingerprint, stop_leftover_workers
from fleetsync.local.summary import RunSummary
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.sinkfactory import build_sink

__all__ = [
    "IN_PROCESS_RATE",
    "ITEMS_PER_PROCESS",
    "ITEMS_PER_PROCESS_SQLITE",
    "LocalRun",
    "RunOptions",
    "expected_total",
    "items_per_process",
    "plan_local_processes",
    "plan_local_shards",
]

log = logging.getLogger("fleetsync.run")

# Items each shard process must have before another process pays for itself. A second
# process costs an interpreter start, the stack's imports and coordination (~0.6 s of CPU,
# ~0.7 s of wall time on 2 cores) and halves the per-item CPU per process. How soon that
# pays depends on the sink's share of that CPU, measured on an idle 2-core machine against
# the 50 ms simulator (bench/results.md sections 1-2): SQLite writes cost little, and one
# process wins up to ~14,000 items (7,000: 2.97 s vs 3.25 s; 14,000: even; 20,000: 7.56 s
# vs 6.38 s); a DynamoDB shard spends far more per item in boto3, and two processes win
# already at 7,000 (5.0 s vs 6.1 s). On a loaded machine (load 9 on 2 cores) more processes
# lost by 1.53x, hence only the cores the load average leaves idle.
ITEMS_PER_PROCESS = 2_500
ITEMS_PER_PROCESS_SQLITE = 7_000
# A run its rate limits hold to this many requests per second or fewer runs all its shards,
# however many, in this process: one process serves ~2,800 items/s at 50 ms (bench section
# 1), and a worker process costs ~0.5 s before its first request (bench section 3: 8 shards
# sharing 25 req/s).
IN_PROCESS_RATE = 500.0


def items_per_process(spec: SyncJobSpec) -> int:
    """:data:`ITEMS_PER_PROCESS`, or more when the sink is the embedded SQLite."""
    return ITEMS_PER_PROCESS_SQLITE if spec.resolved_sink.sqlite is not None else ITEMS_PER_PROCESS


def idle_cores() -> int:
    """Cores not busy by the 1-minute load average (at least 1)."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return max(1, min(cores, round(cores - busy)))


@dataclass(frozen=True, slots=True)
class RunOptions:
    manifest: Path
    shards: int | None = None
    parallelism: int | None = None
    processes: int | None = None
    secrets_dir: str | None = None
    state_dir: Path = Path(".fleetsync")
    transport: str = "aiohttp"
    backoff_limit: int = 6
    # None: when there is a single shard, or rate limits hold the run to IN_PROCESS_RATE
    # (and neither --processes nor --parallelism asks for processes)
    in_process: bool | None = None
    restart: bool = False  # ignore an interrupted run's progress and start over


def plan_local_shards(spec: SyncJobSpec, requested: int | None, *, cores: int | None = None) -> int:
    """Shards for a local run: ``--shards``, else ``spec.sharding.shards``, else sized.

    Sized from the fleet and the machine's ``cores`` (default: :func:`idle_cores`): one
    shard (in this process) unless the fleet has :func:`items_per_process` items for each
    process, never more than the cores nor ``sharding.maxParallelism``. A fleet of unknown
    size gets one shard per core."""
    if requested is not None:
        return requested
    if isinstance(spec.sharding.shards, int):
        return spec.sharding.shards
    limit = max(1, min(cores or idle_cores(), spec.sharding.max_parallelism))
    total = expected_total(spec)
    if total is None:
        return limit
    return max(1, min(limit, total // items_per_process(spec)))


def plan_local_processes(
    shards: int, requested: int | None, parallelism: int | None, *, cores: int | None = None
) -> list[tuple[int, ...]]:
    """The shards each worker process runs: ``--processes``, else one process per core, never
    more than one per shard; shards dealt round-robin. Several shards in one process pay one
    interpreter start and one import of the stack (~0.5 s of CPU each: 8 shard processes on
    2 cores took 3-4 s to send a first request). ``--parallelism`` keeps one process per
    shard, at most that many at once, as before. One shard alone runs in ``fleetsync run``'s
    own process (:meth:`LocalRun.run`), not here."""
    if parallelism is not None:
        return [(shard,) for shard in range(shards)]
    count = max(1, min(shards, requested or cores or os.cpu_count() or 1))
    return [tuple(range(first, shards, count)) for first in range(count)]


@dataclass(slots=True)
class _ShardOutcome:
    exit_code: int
    restarts: int = 0
    error: str | None = None  # the shard's own account of why it failed, if it gave one


@dataclass(slots=True)
class LocalRun:
    options: RunOptions
    on_progress: Callable[[RunProgress, float], None] | None = None
    name: str = ""
    spec: SyncJobSpec | None = None
    shards: int = 1
    coordinator: LocalCoordinator | None = None
    started: float = 0.0
    _stopping: bool = False
    _procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    _stop_shard: asyncio.Event | None = None
    # Pod names are unique per invocation: a pod name the coordinator has seen is a pod
    # it may have replaced (and would tell to stop).
    _tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def run_dir(self) -> Path:
        return (self.options.state_dir / "runs" / self.name).resolve()

    def prepare(self) -> None:
        """Validate everything that can be checked before starting (ManifestError if not)."""
        self.name, self.spec = load_spec(self.options.manifest)
        self.shards = plan_local_shards(self.spec, self.options.shards)
        # Resolve the sink's Secret references now: a missing one is a config error (64),
        # better said once here than by every shard.
        build_sink(
            self.spec,
            secrets=SecretResolver(self.options.secrets_dir),
            base_dir=self.options.manifest.parent,
            create_tables=False,
        )

    def stop(self) -> None:
        """Interrupt the run: every shard checkpoints and exits."""
        self._stopping = True
        if self.coordinator is not None:
            self.coordinator.stopping = True
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if self._stop_shard is not None:
            self._stop_shard.set()

    async def run(self) -> RunSummary:
        if self.spec is None:
            self.prepare()
        assert self.spec is not None
        spec = self.spec
        progress = RunProgress(self.name, self.shards, expected_total=expected_total(spec))
        await asyncio.to_thread(stop_leftover_workers, self.run_dir)
        state = RunState(self.run_dir, fingerprint(spec, self.shards))
        snapshot = None if self.options.restart else state.load()
        if snapshot is not None:
            progress.restore(snapshot)
            log.info("resuming %s: %d items already final", self.name, progress.resumed)
        self.coordinator = LocalCoordinator(progress, state=state)
        self.started = time.monotonic()
        in_process = self.options.in_process
        if in_process is None:
            in_process = self.shards == 1 or (
                self.options.processes is None
                and self.options.parallelism is None
                and rate_bound(spec.source) <= IN_PROCESS_RATE
            )
        ticker = asyncio.create_task(self._tick(progress))
        deadline = (
            asyncio.get_running_loop().call_later(spec.deadline_seconds, self.stop)
            if spec.deadline_seconds
            else None
        )
        try:
            if in_process:
                outcomes = await self._run_in_process(spec)
            else:
                # Workers start while the report endpoint does: they connect into its
                # socket's backlog and are answered as soon as it serves.
                processes = asyncio.create_task(self._run_processes(self.coordinator.listen()))
                try:
                    await self.coordinator.serve()
                except BaseException:
                    self.stop()
                    await asyncio.gather(processes, return_exceptions=True)
                    raise
                outcomes = await processes
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if deadline is not None:
                deadline.cancel()
            await self.coordinator.stop()
            self.coordinator.persist(time.time(), final=True)
        detail = progress.config_error()
        if detail is not None and any(
            o.exit_code == ExitCode.INVALID_CONFIG for o in outcomes.values()
        ):  # said as a shard in this process says it (exit 64, the JSON error object)
            raise ManifestError(
                [(detail["field"] or "spec", detail["reason"])], hint=detail["hint"]
            )
        return self._summarise(spec, progress, outcomes, deadline_hit=self._deadline_hit(spec))

    def _deadline_hit(self, spec: SyncJobSpec) -> bool:
        elapsed = time.monotonic() - self.started
        return bool(spec.deadline_seconds and self._stopping and elapsed >= spec.deadline_seconds)

    async def _tick(self, progress: RunProgress) -> None:
        while True:
            if self.on_progress is not None:
                self.on_progress(progress, time.monotonic() - self.started)
            if self.coordinator is not None:
                self.coordinator.persist(time.time())  # what the last report changed
            await asyncio.sleep(0.25)

    def _done(self, shard: int) -> bool:
        """Finished in an earlier invocation: nothing to start."""
        assert self.coordinator is not None
        view = self.coordinator.progress.views.get(shard)
        return view is not None and view.state == "done"

    async def _run_in_process(self, spec: SyncJobSpec) -> dict[int, _ShardOutcome]:
        """Every shard not finished yet, in this process (no restarts: a crash ends the run)."""
        assert self.coordinator is not None
        todo = [shard for shard in range(self.shards) if not self._done(shard)]
        outcomes = {shard: _ShardOutcome(ExitCode.OK) for shard in range(self.shards)}
        if not todo:
            return outcomes
        # Imported here: a run of worker processes never needs the engine, its HTTP clients
        # and metrics in this process, and importing them (~0.15 s) delayed every worker.
        from fleetsync.collector import tune_for_shards
        from fleetsync.worker.main import run_shard, shard_results

        tune_for_shards()
        self._stop_shard = asyncio.Event()
        if self._stopping:
            self._stop_shard.set()
        coordinator = InProcessCoordinator(self.coordinator)
        secrets_ = SecretResolver(self.options.secrets_dir)
        plans = [
            ShardPlan(
                run=self.name,
                shard=shard,
                shards=self.shards,
                pod=f"local-{self._tag}-{shard}",
                base_dir=self.options.manifest.parent,
            )
            for shard in todo
        ]
        results = await asyncio.gather(
            *(
                run_shard(
                    spec,
                    plan,
                    secrets=secrets_,
                    coordinator=coordinator,
                    transport=self.options.transport,
                    stop=self._stop_shard,
                )
                for plan in plans
            ),
            return_exceptions=True,
        )
        for shard, result in zip(todo, shard_results(results), strict=True):
            if result.state == "failed":
                outcomes[shard] = _ShardOutcome(ExitCode.FAILED, error=result.error)
            elif result.state != "done":
                outcomes[shard] = _ShardOutcome(ExitCode.INTERRUPTED)
        return outcomes

    async def _run_processes(self, url: str) -> dict[int, _ShardOutcome]:
        assert self.coordinator is not None
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        token_file = run_dir / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.coordinator.token)
        groups = plan_local_processes(self.shards, self.options.processes, self.options.parallelism)
        slots = asyncio.Semaphore(self.options.parallelism or len(groups))

        async def one(group: tuple[int, ...]) -> dict[int, _ShardOutcome]:
            async with slots:
                return await self._supervise(group, url, token_file, run_dir)

        results = await asyncio.gather(*(one(group) for group in groups))
        token_file.unlink(missing_ok=True)
        return {shard: outcome for result in results for shard, outcome in result.items()}

    async def _supervise(
        self, group: tuple[int, ...], url: str, token_file: Path, run_dir: Path
    ) -> dict[int, _ShardOutcome]:
        """Run ``group``'s shards in one worker process, restarted (with the shards it has
        not finished) until they are done, it fails for good, or the run stops. A restart
        is counted against every shard of the process."""
        outcome = _ShardOutcome(exit_code=ExitCode.FAILED)
        outcomes = dict.fromkeys(group, outcome)
        command = [
            sys.executable, "-m", "fleetsync", "worker",
            "--manifest", str(self.options.manifest), "--shards", str(self.shards),
            "--run", self.name, "--coordinator", url, "--token-file", str(token_file),
            "--transport", self.options.transport,
        ]  # fmt: skip
        if self.options.secrets_dir:
            command += ["--secrets-dir", self.options.secrets_dir]
        name = f"shard-{group[0]}" if len(group) == 1 else f"shards-{'-'.join(map(str, group))}"
        attempt = 0
        while not self._stopping or attempt == 0:
            todo = [shard for shard in group if not self._done(shard)]
            if not todo:  # finished in an earlier invocation, or before the process died
                outcome.exit_code = ExitCode.OK
                return outcomes
            attempt += 1
            log_path = run_dir / f"{name}.log"
            with log_path.open("ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    *(arg for shard in todo for arg in ("--shard", str(shard))),
                    "--pod",
                    f"local-{self._tag}-{group[0]}-{attempt}",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                self._procs[group[0]] = proc
                for shard in todo:  # the process of each shard, as a tool that kills one finds it
                    (run_dir / f"shard-{shard}.pid").write_text(str(proc.pid))
                code = await proc.wait()
                del self._procs[group[0]]
            outcome.exit_code = code
            if code in (ExitCode.OK, ExitCode.INVALID_CONFIG):
                return outcomes
            if self._stopping:
                return outcomes
            if code != ExitCode.INTERRUPTED:
                outcome.restarts += 1
                log.warning("%s exited %d; see %s", name.replace("-", " ", 1), code, log_path)
                if outcome.restarts > self.options.backoff_limit:
                    return outcomes
                await asyncio.sleep(min(0.1 * 2**outcome.restarts, 5.0))
        return outcomes

    def _summarise(
        self,
        spec: SyncJobSpec,
        progress: RunProgress,
        outcomes: dict[int, _ShardOutcome],
        *,
        deadline_hit: bool,
    ) -> RunSummary:
        items = progress.items()
        reason: str
        codes = {o.exit_code for o in outcomes.values()}
        if ExitCode.INVALID_CONFIG in codes:
            phase, reason, message = (
                Phase.FAILED,
                Reason.INVALID_SPEC,
                "a shard found its config invalid",
            )
        elif deadline_hit:
            phase, reason = Phase.FAILED, Reason.DEADLINE_EXCEEDED
            message = f"not finished within deadlineSeconds={spec.deadline_seconds}"
        elif self._stopping:
            phase, reason = Phase.FAILED, Reason.FAILED
            message = "interrupted; run it again to resume (--restart starts over)"
        elif codes - {ExitCode.OK}:
            bad = sorted(i for i, o in outcomes.items() if o.exit_code != ExitCode.OK)
            phase, reason = Phase.FAILED, Reason.FAILED
            errors = [o.error for o in outcomes.values() if o.error]
            where = f"logs in {self.options.state_dir}/runs/{self.name}"
            message = f"shards {bad} kept failing: {errors[-1]}" if errors else ""
            message = message or f"shards {bad} kept failing; {where}"
            if errors and errors[-1].startswith("AccountingError"):
                reason = Reason.ACCOUNTING_ERROR
        else:
            verdict = final_phase(items, spec.dead_letter)
            phase, reason, message = verdict.phase, verdict.reason, verdict.message
        return RunSummary(
            run=self.name,
            phase=phase,
            reason=str(reason),
            message=message,
            items=items,
            duration_seconds=time.monotonic() - self.started,
            cost=progress.cost(),
            vendors=progress.vendors(),
            failed_sample=progress.failed_sample(),
            shards=self.shards,
            restarts={i: o.restarts for i, o in outcomes.items()},
            resumed=progress.resumed,
        )


# Looked up once in the parent: between fork and exec only the call itself should run.
_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the worker, before exec: be killed when this runner dies (Linux), so a ``kill -9``
    of ``fleetsync run`` leaves no worker fetching on its own."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
