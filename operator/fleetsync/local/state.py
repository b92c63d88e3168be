"""Where ``fleetsync run`` keeps a run's progress between invocations, so a second run resumes.

``<state-dir>/runs/<name>/progress.json`` holds the coordinator's snapshot
(:meth:`RunProgress.snapshot`: every shard's checkpoint and counts), written atomically
(temporary file, fsync, rename) so a ``kill -9`` mid-write leaves the previous snapshot, never
half of one. A new run of the same manifest with the same shard count restores it and hands
each shard its checkpoint; a finished run, a changed manifest or ``--restart`` starts over.

The workers of an interrupted run are found by the pid files the runner writes next to it;
one still alive (its runner was killed) is stopped before the next run starts, or it would
go on fetching what the new run fetches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetsync.api.v1alpha1 import SyncJobSpec

__all__ = ["RunState", "fingerprint", "stop_leftover_workers"]

log = logging.getLogger("fleetsync.run")
_VERSION = 1


def fingerprint(spec: SyncJobSpec, shards: int) -> str:
    """Checkpoints are positions in each shard's inventory: valid only for the same spec
    and the same number of shards."""
    text = json.dumps({"spec": spec.model_dump(mode="json"), "shards": shards}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RunState:
    run_dir: Path
    fingerprint: str

    @property
    def path(self) -> Path:
        return self.run_dir / "progress.json"

    def load(self) -> Mapping[str, Any] | None:
        """The unfinished run's snapshot to resume, or None to start fresh."""
        try:
            stored = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable %s (%s): starting over", self.path, error)
            return None
        if not isinstance(stored, dict) or stored.get("version") != _VERSION:
            return None
        if stored.get("fingerprint") != self.fingerprint:
            log.warning("the manifest or shard count changed since the last run: starting over")
            return None
        if stored.get("finished"):
            return None
        progress = stored.get("progress")
        return progress if isinstance(progress, dict) else None

    def save(self, snapshot: Mapping[str, Any], *, finished: bool) -> None:
        body = {
            "version": _VERSION,
            "fingerprint": self.fingerprint,
            "finished": finished,
            "progress": snapshot,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".progress-", suffix=".json", dir=self.run_dir)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(body, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _is_our_worker(pid: int, run_dir: Path) -> bool:
    """Only a process whose command line is a fleetsync worker of this run's state dir
    (pids are reused). Without /proc we cannot tell, so we leave it alone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"worker" in argv and str(run_dir / "token").encode() in argv


def stop_leftover_workers(run_dir: Path, *, wait_seconds: float = 5.0) -> list[int]:
    """Kill workers an earlier, killed runner left behind; returns their pids."""
    killed = []
    for pid_file in run_dir.glob("shard-*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if pid != os.getpid() and _is_our_worker(pid, run_dir):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + wait_seconds
    while killed and sys.platform == "linux" and time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in killed):
            break
        time.sleep(0.05)
    if killed:
        log.warning("stopped %d worker(s) left by an interrupted run", len(killed))
    return killed
