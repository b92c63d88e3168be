"""Run the simulator in its own process, as tests, benchmarks and the demo do: it then
competes with the code under test only for CPU, never for its event loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from fleetsync.simulator.config import SimulatorConfig

__all__ = ["SimulatorProcess"]


class SimulatorProcess:
    def __init__(
        self, config: SimulatorConfig, *, python: str = sys.executable, start_timeout: float = 30
    ) -> None:
        self.config = config
        self.python = python
        self.start_timeout = start_timeout
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._client: httpx.Client | None = None

    def __enter__(self) -> SimulatorProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="fleetsync-sim-")
        path = Path(self._dir.name) / "simulator.json"
        path.write_text(self.config.model_dump_json(by_alias=True))
        self._process = subprocess.Popen(
            [self.python, "-m", "fleetsync", "simulate", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = ""
        # readline blocks, but the child prints its address first or dies (EOF).
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if line.startswith("listening on ") or not line:
                break
        if not line.startswith("listening on "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"simulator did not start (said {line!r})")
        self.url = line.removeprefix("listening on ").strip()
        self._client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            self._client.close()
        if self._process is not None:
            if self._process.poll() is None:
                os.killpg(self._process.pid, signal.SIGTERM)
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._process.pid, signal.SIGKILL)
                    self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
        if self._dir is not None:
            self._dir.cleanup()

    def _http(self) -> httpx.Client:
        assert self._client is not None, "use SimulatorProcess as a context manager"
        return self._client

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._http().get("/_sim/stats").raise_for_status().json()
        return data

    def patch_vendor(self, name: str, **changes: Any) -> dict[str, Any]:
        response = self._http().request(
            "PATCH", f"/_sim/vendors/{name}", content=json.dumps(changes)
        )
        data: dict[str, Any] = response.raise_for_status().json()
        return data

    def reset(self) -> None:
        self._http().post("/_sim/reset").raise_for_status()
