"""The real servers a fault schedule runs against, and the chaos in front of them.

One session: the vendor simulator (its own process), PostgreSQL, the DynamoDB-protocol
server (moto) with the fault-injecting :class:`support.dynamodb.FaultProxy`, and TCP
:class:`chaos.ChaosProxy` instances in front of each. The proxies live on an event loop in
a background thread, because the test itself blocks on ``fleetsync run`` as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from chaos import ChaosProxy, Faults

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig
from support.dynamodb import FaultProxy, moto_server
from support.postgres import postgres_server

T = TypeVar("T")
VENDORS = ("sungrow", "huawei")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Servers:
    loop: LoopThread
    sim: SimulatorProcess
    vendor_chaos: ChaosProxy
    postgres_dsn: str  # direct, for reading back
    postgres_chaos: ChaosProxy
    dynamodb_url: str  # direct, for reading back
    dynamodb_faults: FaultProxy
    dynamodb_chaos: ChaosProxy

    def vendor_url(self, vendor: str) -> str:
        return f"http://127.0.0.1:{self.vendor_chaos.port}/vendors/{vendor}"

    def postgres_dsn_via_chaos(self) -> str:
        parts = urlsplit(self.postgres_dsn)
        netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{self.postgres_chaos.port}"
        return parts._replace(netloc=netloc).geturl()

    def dynamodb_url_via_chaos(self) -> str:
        return f"http://127.0.0.1:{self.dynamodb_chaos.port}"

    def set_faults(
        self, *, vendor: Faults, postgres: Faults, dynamodb: Faults, ddb_throttle: float,
        ddb_unprocessed: float, seed: int,
    ) -> None:  # fmt: skip
        def apply() -> None:
            for proxy, faults in (
                (self.vendor_chaos, vendor),
                (self.postgres_chaos, postgres),
                (self.dynamodb_chaos, dynamodb),
            ):
                proxy.faults = faults
                proxy.reseed(seed)
            self.dynamodb_faults.throttle_rate = ddb_throttle
            self.dynamodb_faults.unprocessed_rate = ddb_unprocessed

        self.loop.call(apply)

    def sever_postgres(self) -> None:
        self.loop.call(self.postgres_chaos.sever)


@contextlib.contextmanager
def fault_servers() -> Iterator[Servers]:
    fast = {"latency": {"p50Ms": 15, "p99Ms": 40}}
    config = SimulatorConfig(vendors={v: VendorConfig.model_validate(fast) for v in VENDORS})
    loop = LoopThread()
    proxies: list[ChaosProxy] = []
    try:
        with (
            SimulatorProcess(config) as sim,
            postgres_server() as dsn,
            moto_server() as moto,
        ):
            faults = FaultProxy(moto)
            loop.run(faults.start())
            sim_port = urlsplit(sim.url).port
            pg_port = urlsplit(dsn).port
            ddb_port = urlsplit(faults.url).port
            assert sim_port and pg_port and ddb_port
            for port in (sim_port, pg_port, ddb_port):
                proxy = ChaosProxy("127.0.0.1", port)
                loop.run(proxy.start())
                proxies.append(proxy)
            try:
                yield Servers(loop, sim, proxies[0], dsn, proxies[1], moto, faults, proxies[2])
            finally:
                for proxy in proxies:
                    loop.run(proxy.stop())
                loop.run(faults.stop())
    finally:
        loop.close()
