"""Sinks: where records land. Each implements :class:`fleetsync.sinks.base.Sink`."""

from fleetsync.sinks.base import DeadLetter, Record, RecordState, Sink, SinkCost, WriteResult

__all__ = ["DeadLetter", "Record", "RecordState", "Sink", "SinkCost", "WriteResult"]
