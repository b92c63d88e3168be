"""A TCP proxy that breaks connections the way networks and restarting servers do.

It sits between fleetsync and a real server (the vendor simulator, PostgreSQL, the
DynamoDB-protocol server) on loopback and, per connection, by a seeded random draw:
resets it after some bytes (the peer sees ECONNRESET or a truncated response), stalls it
(forwards nothing for a while, then goes on: a slow body), or passes it through. ``sever()``
drops every open connection at once — what clients of a restarting database see.

Faults are decided per connection from a seeded ``random.Random``, so a failing schedule
replays the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass, field

__all__ = ["ChaosProxy", "Faults"]


@dataclass(slots=True)
class Faults:
    reset_rate: float = 0.0  # fraction of connections reset part-way
    stall_rate: float = 0.0  # fraction of connections that stop forwarding for stall_seconds
    stall_seconds: float = 3.0


@dataclass(slots=True)
class _Counts:
    connections: int = 0
    resets: int = 0
    stalls: int = 0
    severed: int = 0


@dataclass(slots=True)
class ChaosProxy:
    upstream_host: str
    upstream_port: int
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    counts: _Counts = field(default_factory=_Counts)
    port: int = 0
    _rng: random.Random = field(init=False)
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.sever(count=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def sever(self, *, count: bool = True) -> None:
        """Drop every open connection now (a server restart, seen from its clients)."""
        for writer in list(self._open):
            _abort(writer)
            if count:
                self.counts.severed += 1
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.counts.connections += 1
        draw = self._rng.random()
        reset_after = None
        stall_after = None
        if draw < self.faults.reset_rate:
            reset_after = self._rng.randint(0, 2048)
            self.counts.resets += 1
        elif draw < self.faults.reset_rate + self.faults.stall_rate:
            stall_after = self._rng.randint(1, 512)
            self.counts.stalls += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _abort(writer)
            self._tasks.discard(task)
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, None, None),
                self._pipe(up_reader, writer, reset_after, stall_after),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                _abort(w)
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reset_after: int | None,
        stall_after: int | None,
    ) -> None:
        sent = 0
        stalled = False
        while True:
            data = await reader.read(4096)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            if reset_after is not None and sent + len(data) > reset_after:
                writer.write(data[: max(0, reset_after - sent)])
                raise ConnectionResetError("chaos: reset")
            if stall_after is not None and not stalled and sent + len(data) > stall_after:
                writer.write(data[: stall_after - sent])
                await writer.drain()
                await asyncio.sleep(self.faults.stall_seconds)
                data = data[stall_after - sent :]
                sent = stall_after
                stalled = True
            writer.write(data)
            await writer.drain()
            sent += len(data)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    with contextlib.suppress(Exception):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0: close with RST, as a crashed or restarted peer does.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()
