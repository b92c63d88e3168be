"""DynamoDB: BatchWriteItem of 25, conditional PutItem when ``monotonicOn`` is set.

boto3 is synchronous: calls run in a bounded thread pool (its client is thread-safe) sized
to boto3's connection pool. Keys come from the ``key`` templates (``PK: PLANT#{id}``).
A batch touching one key twice is refused by DynamoDB, so duplicates are merged first.

One bad record fails one item: each record is checked against DynamoDB's limits before it
is sent (:mod:`fleetsync.sinks.dynamodb_values`), and when DynamoDB still refuses a batch
(ValidationException, e.g. an item over 400 KB) the batch is halved until the refused
record is alone; the others are written. Throttling, UnprocessedItems/Keys, connection
errors and 5xx are retried on reads, writes and dead letters alike by the one policy
(:mod:`fleetsync.sinks.dynamodb_calls`); only when its budget is spent does a call raise
SinkError. BatchWriteItem cannot carry a condition, so with ``monotonicOn`` each record is a
PutItem with ``attribute_not_exists OR #m <= :m``; a refused condition means the stored
record is newer: that item is ``stale``. Dead letters are items ``DLQ#<run>#<key>#<member>``
in the same table. Shards opening at once may race to create the table: the loser waits
for it to become ACTIVE. Consumed write capacity is reported as cost.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from fleetsync.backoff import Backoff
from fleetsync.errors import ManifestError, SinkError
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, SinkCost, WriteResult
from fleetsync.sinks.dynamodb_calls import Caller, Refused
from fleetsync.sinks.dynamodb_values import (
    KeyForEveryField,
    Template,
    from_dynamo,
    put_request,
    to_dynamo,
    wire,
)
from fleetsync.sinks.merge import merge_batch
from fleetsync.sinks.retry import Attempts, SinkRetry
from fleetsync.sinks.values import json_text

__all__ = ["DynamoDBSink"]

T = TypeVar("T")
_POOL = 10  # boto3's default connection pool; more threads would only queue for it
_WAIT_ACTIVE = SinkRetry(Backoff(base=0.5, cap=5.0, jitter="equal"), attempts=80, seconds=300)
_MISSING = frozenset({"ResourceNotFoundException"})
_IN_USE = frozenset({"ResourceInUseException"})
_NEWER_OR_EQUAL = "attribute_not_exists(#k0) OR attribute_not_exists(#m) OR #m <= :m"


class DynamoDBSink:
    max_batch_size: int
    max_concurrent_writes = 4

    def __init__(
        self,
        table: str,
        *,
        region: str = "us-east-1",
        key_template: Mapping[str, str] | str | None = None,
        endpoint_url: str | None = None,
        batch_size: int = 25,
        ttl_attribute: str | None = None,
        ttl_days: float | None = None,
        monotonic_attribute: str | None = None,
        credentials: tuple[str, str] | None = None,
        create_table: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        retry: SinkRetry | None = None,
    ) -> None:
        self.table = table
        templates = key_template or {"PK": "{key}"}
        self.key_templates = {"PK": templates} if isinstance(templates, str) else dict(templates)
        self.ttl_attribute, self.ttl_days = ttl_attribute, ttl_days
        self.monotonic_attribute = monotonic_attribute
        self.max_batch_size = min(batch_size, 25)
        self.create_table = create_table
        self._cost = SinkCost()
        self._calls = Caller(table, self._cost, retry or SinkRetry(), sleep, random.Random())
        session = boto3.session.Session(
            aws_access_key_id=credentials[0] if credentials else None,
            aws_secret_access_key=credentials[1] if credentials else None,
            region_name=region,
        )
        retries: Any = {"total_max_attempts": 1, "mode": "standard"}  # ours, not botocore's
        config = Config(max_pool_connections=_POOL, retries=retries)
        # Typed as Any: boto3-stubs types items as AttributeValue unions, while this module
        # works with plain Python values through the resource layer's (de)serialisers.
        self._client: Any = session.client("dynamodb", endpoint_url=endpoint_url, config=config)
        self._resource: Any = session.resource("dynamodb", endpoint_url=endpoint_url, config=config)
        self._executor = ThreadPoolExecutor(max_workers=_POOL, thread_name_prefix="dynamodb")
        self._template = Template()

    @property
    def cost(self) -> SinkCost:
        return self._cost

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _call(self, tries: Attempts, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        return self._calls.call(tries, what, fn, **kwargs)

    # --- lifecycle -------------------------------------------------------------------------

    def _describe(self) -> str:
        """The table's status, or "missing"; other refusals make the sink unusable."""
        try:
            described = self._call(
                self._calls.attempts(), "describe table", self._client.describe_table,
                TableName=self.table, expected=_MISSING,
            )  # fmt: skip
        except Refused as refused:
            if refused.code in _MISSING:
                return "missing"
            raise SinkError(f"dynamodb {self.table}: {refused.message}") from None
        return str(described["Table"]["TableStatus"])

    def _open(self) -> None:
        status = self._describe()
        if status == "missing":
            if not self.create_table:
                raise ManifestError(
                    [("spec.sink.dynamodb.table", f"table {self.table!r} does not exist")],
                    hint="create it, or set spec.sink.dynamodb.createTable: true",
                ) from None
            self._create()
        elif status in ("ACTIVE", "UPDATING"):
            return
        self._wait_active()

    def _create(self) -> None:
        keys = list(self.key_templates)
        try:
            self._call(
                self._calls.attempts(), "create table", self._client.create_table,
                expected=_IN_USE, TableName=self.table, BillingMode="PAY_PER_REQUEST",
                KeySchema=[
                    {"AttributeName": name, "KeyType": "HASH" if i == 0 else "RANGE"}
                    for i, name in enumerate(keys)
                ],
                AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in keys],
            )  # fmt: skip
        except Refused as refused:
            if refused.code not in _IN_USE:  # in use: another shard creates it; wait as it does
                raise SinkError(f"dynamodb {self.table}: create: {refused.message}") from None

    def _wait_active(self) -> None:
        tries = Attempts(_WAIT_ACTIVE, random.Random())
        while True:
            status = self._describe()  # "missing": a racing CreateTable is not visible yet
            if status in ("ACTIVE", "UPDATING"):
                return
            self._calls.wait(tries, "waiting for the table to become ACTIVE", f"status {status}")

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()

    # --- keys and items --------------------------------------------------------------------

    def _key_of(self, key: str, item: Mapping[str, JSONValue]) -> dict[str, str]:
        return {n: self._template.expand(t, item, key) for n, t in self.key_templates.items()}

    def _key_text(self, record: Record) -> str:
        return json.dumps(self._key_of(record.key, record.item), sort_keys=True)

    def _request(self, record: Record) -> dict[str, Any]:
        """The record as a PutRequest on the wire; ValueError names why it cannot be one."""
        try:
            key = self._key_of(record.key, record.item)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"key template needs item field {error}") from None
        expires = None
        if self.ttl_attribute and self.ttl_days:
            expires = (self.ttl_attribute, int(time.time() + self.ttl_days * 86400))
        return put_request(record, key, expires)

    # --- reads -----------------------------------------------------------------------------

    def _read(self, keys: Mapping[str, dict[str, str]]) -> dict[str, RecordState]:
        by_key = {json.dumps(k, sort_keys=True): key for key, k in keys.items()}
        out: dict[str, RecordState] = {}
        pending = [k for k in keys.values() if all(k.values())]  # empty keys cannot exist
        for start in range(0, len(pending), 100):
            self._read_chunk(pending[start : start + 100], by_key, out)
        return out

    def _read_chunk(
        self, request: list[dict[str, str]], by_key: dict[str, str], out: dict[str, RecordState]
    ) -> None:
        projection = ["_fs_key", "_fs_hash", "_fs_synced_at", *self.key_templates]
        if self.monotonic_attribute:
            projection.append(self.monotonic_attribute)
        names = {f"#p{i}": n for i, n in enumerate(projection)}
        tries = self._calls.attempts()
        while request:
            try:
                response = self._call(
                    tries, "read", self._resource.batch_get_item,
                    RequestItems={self.table: {"Keys": request, "ExpressionAttributeNames": names,
                                               "ProjectionExpression": ", ".join(names)}},
                    ReturnConsumedCapacity="TOTAL",
                )  # fmt: skip
            except Refused:  # a key DynamoDB cannot hold cannot be stored: find the others
                if len(request) > 1:
                    half = len(request) // 2
                    self._read_chunk(request[:half], by_key, out)
                    self._read_chunk(request[half:], by_key, out)
                return
            for used in response.get("ConsumedCapacity") or []:
                self._cost.read_units += float(used.get("CapacityUnits") or 0)
            for row in response.get("Responses", {}).get(self.table, []):
                found = json.dumps({n: row[n] for n in self.key_templates}, sort_keys=True)
                if (key := by_key.get(found)) is not None:
                    mono = row.get(self.monotonic_attribute) if self.monotonic_attribute else None
                    at = from_dynamo(row.get("_fs_synced_at"))
                    out[key] = RecordState(row.get("_fs_hash"), at, from_dynamo(mono))
            request = (response.get("UnprocessedKeys") or {}).get(self.table, {}).get("Keys", [])
            if request:
                self._calls.wait(tries, "read", f"{len(request)} keys left unprocessed")

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        """State by fleet key. The key templates are expanded with every field standing for
        the key (``PLANT#{id}`` with key ``id``), which is right whenever a template uses
        the key field only; otherwise reads miss and items are simply fetched and written."""
        if not keys:
            return {}
        return await self._run(self._read, {k: self._key_of(k, KeyForEveryField(k)) for k in keys})

    # --- writes ----------------------------------------------------------------------------

    def _send(self, requests: Sequence[dict[str, Any]], what: str) -> None:
        """BatchWriteItem every request (chunks of 25) until all are processed."""
        for start in range(0, len(requests), 25):
            left = list(requests[start : start + 25])
            tries = self._calls.attempts()
            while left:
                response = self._call(
                    tries, what, self._client.batch_write_item,
                    RequestItems={self.table: left}, ReturnConsumedCapacity="TOTAL",
                )  # fmt: skip
                for used in response.get("ConsumedCapacity") or []:
                    self._cost.write_units += float(used.get("CapacityUnits") or 0)
                left = (response.get("UnprocessedItems") or {}).get(self.table, [])
                self._cost.unprocessed_items += len(left)
                if left:
                    self._calls.wait(tries, what, f"{len(left)} items left unprocessed")

    def _batch(self, ready: Sequence[tuple[Record, dict[str, Any]]], result: WriteResult) -> None:
        """Write ``ready``; a refused batch is halved until the refused record is alone."""
        try:
            self._send([request for _, request in ready], "write")
        except Refused as refused:
            if len(ready) == 1:
                result.failed[ready[0][0].key] = f"dynamodb refused the item: {refused.message}"
                return
            half = len(ready) // 2
            self._batch(ready[:half], result)
            self._batch(ready[half:], result)
            return
        result.written += [record.key for record, _ in ready]

    def _put(self, record: Record, request: dict[str, Any]) -> tuple[str, str | None]:
        """One conditional put: ('written'|'stale'|'failed', reason)."""
        m = self.monotonic_attribute
        assert m is not None
        try:
            response = self._call(
                self._calls.attempts(), "write", self._client.put_item, TableName=self.table,
                Item=request["PutRequest"]["Item"],
                ConditionExpression=_NEWER_OR_EQUAL,
                ExpressionAttributeNames={"#k0": next(iter(self.key_templates)), "#m": m},
                ExpressionAttributeValues=wire({":m": to_dynamo(record.attributes.get(m))}),
                ReturnConsumedCapacity="TOTAL",
            )  # fmt: skip
        except Refused as refused:
            if refused.code == "ConditionalCheckFailedException":
                self._cost.write_units += 1  # a refused conditional write still costs
                return "stale", None
            return "failed", f"dynamodb refused the item: {refused.message}"
        used = response.get("ConsumedCapacity") or {}
        self._cost.write_units += float(used.get("CapacityUnits") or 1)
        return "written", None

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        merged, superseded = merge_batch(records, key=self._safe_key_text)
        result = WriteResult()
        ready: list[tuple[Record, dict[str, Any]]] = []
        for record in merged:
            try:
                ready.append((record, self._request(record)))
            except ValueError as error:
                result.failed[record.key] = str(error)
        if self.monotonic_attribute is None:
            await self._run(self._batch, ready, result)
        else:
            outcomes = await asyncio.gather(*(self._run(self._put, r, q) for r, q in ready))
            for (record, _), (outcome, reason) in zip(ready, outcomes, strict=True):
                if outcome == "written":
                    result.written.append(record.key)
                elif outcome == "stale":
                    result.stale.append(record.key)
                else:
                    result.failed[record.key] = reason or "failed"
        done = set(result.written) | set(result.stale) | set(result.failed)
        result.written += [k for k in dict.fromkeys(superseded) if k not in done]
        return result

    def _safe_key_text(self, record: Record) -> str:
        try:
            return self._key_text(record)
        except (KeyError, IndexError, ValueError):
            return json.dumps({"_fs_key": record.key})  # fails in _request, with the reason

    # --- dead letters ----------------------------------------------------------------------

    def _letter_key(self, run: str, key: str, member: str) -> dict[str, str]:
        value = f"DLQ#{run}#{key}" + (f"#{member}" if member else "")
        return dict.fromkeys(self.key_templates, value)

    def _write_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        requests: dict[str, dict[str, Any]] = {}  # one request per letter key: no duplicates
        for le in letters:
            key = self._letter_key(run, le.key, le.member)
            item = {**key, "dlq_run": run, "_fs_key": le.key, "dlq_member": le.member,
                    "reason": le.reason, "attempts": le.attempts, "item": json_text(le.item),
                    "failed_at": to_dynamo(le.failed_at)}  # fmt: skip
            requests[json.dumps(key)] = {"PutRequest": {"Item": wire(item)}}
        self._send_letters(list(requests.values()))

    def _send_letters(self, requests: list[dict[str, Any]]) -> None:
        """A letter DynamoDB refuses (an item over 400 KB) is kept without its item."""
        try:
            self._send(requests, "write dead letters")
        except Refused as refused:
            if len(requests) > 1:
                self._send_letters(requests[: len(requests) // 2])
                self._send_letters(requests[len(requests) // 2 :])
                return
            item = dict(requests[0]["PutRequest"]["Item"])
            item["item"] = {"S": json.dumps({"_fs_not_kept": refused.message})}
            self._send([{"PutRequest": {"Item": item}}], "write dead letters")

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        if letters:
            await self._run(self._write_letters, run, list(letters))

    def _scan_letters(self, run: str) -> list[dict[str, Any]]:
        # A filtered Scan: fine for dead letters (few, read rarely, by a human or retry-failed).
        table = self._resource.Table(self.table)
        rows: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "FilterExpression": "dlq_run = :r",
            "ExpressionAttributeValues": {":r": run},
        }
        tries = self._calls.attempts()
        while True:
            page = self._call(tries, "read dead letters", table.scan, **kwargs)
            rows += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _read_letters(self, run: str) -> list[DeadLetter]:
        letters = [
            DeadLetter(
                str(row["_fs_key"]),
                str(row["reason"]),
                int(row["attempts"]),
                json.loads(str(row["item"])),
                float(row["failed_at"]),
                str(row.get("dlq_member", "")),  # absent in letters written before members
            )
            for row in self._scan_letters(run)
        ]
        return sorted(letters, key=lambda d: (d.key, d.member))

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        letters = await self._run(self._read_letters, run)
        return letters if limit is None else letters[:limit]

    def _clear(self, run: str, keys: Sequence[str]) -> None:
        wanted = set(keys)
        requests = [
            {"DeleteRequest": {"Key": wire({n: row[n] for n in self.key_templates})}}
            for row in self._scan_letters(run)
            if str(row["_fs_key"]) in wanted
        ]
        self._send(requests, "clear dead letters")

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        if keys:
            await self._run(self._clear, run, list(keys))
