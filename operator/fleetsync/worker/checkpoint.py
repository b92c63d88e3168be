"""Where a shard is, so a killed shard resumes instead of starting over.

Items are numbered by their position in the shard's (stable) inventory stream. They finish
out of order, so a checkpoint is a *watermark* (every item up to it is final) plus a
bitmap of the final items above it. Its size is bounded by the engine's in-flight cap, not
by the fleet. Counts by outcome travel with it: items are counted once, by the checkpoint,
so a replacement's report supersedes its predecessor's and nothing is counted twice.
"""

from __future__ import annotations

import base64
from collections import Counter

from fleetsync.api.progress import CheckpointWire as Checkpoint

__all__ = ["Checkpoint", "CheckpointTracker"]


class CheckpointTracker:
    def __init__(self, resume: Checkpoint | None = None) -> None:
        self._watermark = -1
        self._above: set[int] = set()
        self.counts: Counter[str] = Counter()
        if resume is not None:
            self._watermark = resume["watermark"]
            bits = base64.b64decode(resume["above"]) if resume["above"] else b""
            for byte_index, byte in enumerate(bits):
                for bit in range(8):
                    if byte >> bit & 1:
                        self._above.add(self._watermark + 1 + byte_index * 8 + bit)
            self.counts.update(resume["counts"])

    @property
    def watermark(self) -> int:
        return self._watermark

    def is_final(self, index: int) -> bool:
        return index <= self._watermark or index in self._above

    def finish(self, index: int, outcome: str) -> None:
        if self.is_final(index):
            return  # a re-delivered item never counts twice
        self.counts[outcome] += 1
        self._above.add(index)
        while self._watermark + 1 in self._above:
            self._watermark += 1
            self._above.remove(self._watermark)

    def snapshot(self) -> Checkpoint:
        above = bytearray()
        if self._above:
            top = max(self._above) - self._watermark
            above = bytearray((top + 7) // 8)
            for index in self._above:
                offset = index - self._watermark - 1
                above[offset // 8] |= 1 << (offset % 8)
        return Checkpoint(
            watermark=self._watermark,
            above=base64.b64encode(bytes(above)).decode(),
            counts=dict(self.counts),
        )
