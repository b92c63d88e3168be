"""DynamoDB: BatchWriteItem of 25, conditional PutItem when ``monotonicOn`` is set.

boto3 is synchronous: calls run in a bounded thread pool (its client is thread-safe) sized
to boto3's connection pool. Keys come from the ``key`` templates (``PK: PLANT#{id}``).
A batch touching one key twice is refused by DynamoDB, so duplicates are merged first.
UnprocessedItems and throttling are retried with full-jitter backoff; what is still left
fails those items with the reason. BatchWriteItem cannot carry a condition, so with
``monotonicOn`` each record is a PutItem with ``attribute_not_exists OR #m <= :m``; a refused
condition means the stored record is newer: that item is ``stale``. Dead letters are items
``DLQ#<run>#<key>`` in the same table. Consumed write capacity is reported as cost.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, SinkCost, WriteResult
from fleetsync.sinks.merge import merge_batch

__all__ = ["DynamoDBSink"]

T = TypeVar("T")
_THROTTLES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_POOL = 10  # boto3's default connection pool; more threads would only queue for it
_ATTEMPTS = 8


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return str(value)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


class _KeyForEveryField(dict[str, JSONValue]):
    def __init__(self, key: str) -> None:
        super().__init__()
        self._key = key

    def __missing__(self, name: str) -> JSONValue:
        return self._key


class _Template(string.Formatter):
    """``PLANT#{id}`` over the item; ``{key}`` is the fleet key. Missing fields are errors."""

    def expand(self, template: str, item: Mapping[str, JSONValue], key: str) -> str:
        values = item if isinstance(item, _KeyForEveryField) else {**item, "key": key}
        return self.vformat(template, (), values)


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
    ) -> None:
        self.table = table
        templates = key_template or {"PK": "{key}"}
        self.key_templates = {"PK": templates} if isinstance(templates, str) else dict(templates)
        self.partition_key = next(iter(self.key_templates))
        self.ttl_attribute, self.ttl_days = ttl_attribute, ttl_days
        self.monotonic_attribute = monotonic_attribute
        self.max_batch_size = min(batch_size, 25)
        self.create_table = create_table
        self._sleep = sleep
        self._cost = SinkCost()
        self._rng = random.Random()
        session = boto3.session.Session(
            aws_access_key_id=credentials[0] if credentials else None,
            aws_secret_access_key=credentials[1] if credentials else None,
            region_name=region,
        )
        config = Config(max_pool_connections=_POOL, retries={"max_attempts": 1, "mode": "standard"})
        # Typed as Any: boto3-stubs types items as AttributeValue unions, while this module
        # works with plain Python values through the resource layer's (de)serialisers.
        self._client: Any = session.client("dynamodb", endpoint_url=endpoint_url, config=config)
        self._resource: Any = session.resource("dynamodb", endpoint_url=endpoint_url, config=config)
        self._executor = ThreadPoolExecutor(max_workers=_POOL, thread_name_prefix="dynamodb")
        self._template = _Template()

    @property
    def cost(self) -> SinkCost:
        return self._cost

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _backoff(self, attempt: int) -> None:
        self._sleep(self._rng.uniform(0, min(2.0, 0.05 * 2**attempt)))  # full jitter

    # --- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self._client.describe_table(TableName=self.table)
            return
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise SinkError(f"dynamodb {self.table}: {error}") from None
            if not self.create_table:
                raise SinkError(
                    f"dynamodb table {self.table!r} does not exist (set createTable: true)"
                ) from None
        except BotoCoreError as error:
            raise SinkError(f"dynamodb {self.table}: {error}") from None
        keys = list(self.key_templates)
        self._client.create_table(
            TableName=self.table,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": name, "KeyType": "HASH" if i == 0 else "RANGE"}
                for i, name in enumerate(keys)
            ],
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in keys],
        )
        self._client.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )

    async def open(self) -> None:
        self._cost.calls += 1
        await self._run(self._open)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()

    # --- keys and items --------------------------------------------------------------------

    def _key_of(self, key: str, item: Mapping[str, JSONValue]) -> dict[str, str]:
        return {n: self._template.expand(t, item, key) for n, t in self.key_templates.items()}

    def _item(self, record: Record) -> dict[str, Any]:
        item = {k: _to_dynamo(v) for k, v in record.attributes.items() if v is not None}
        item.update(self._key_of(record.key, record.item))
        item["_fs_key"] = record.key
        item["_fs_hash"] = record.content_hash
        item["_fs_synced_at"] = _to_dynamo(record.synced_at)
        if self.ttl_attribute and self.ttl_days:
            item[self.ttl_attribute] = int(time.time() + self.ttl_days * 86400)
        return item

    # --- reads -----------------------------------------------------------------------------

    def _read(self, keys: Mapping[str, dict[str, str]]) -> dict[str, RecordState]:
        by_key = {json.dumps(k, sort_keys=True): key for key, k in keys.items()}
        out: dict[str, RecordState] = {}
        pending = list(keys.values())
        projection = ["_fs_key", "_fs_hash", "_fs_synced_at", *self.key_templates]
        if self.monotonic_attribute:
            projection.append(self.monotonic_attribute)
        names = {f"#p{i}": n for i, n in enumerate(projection)}
        for chunk_start in range(0, len(pending), 100):
            request: list[dict[str, str]] = pending[chunk_start : chunk_start + 100]
            for attempt in range(_ATTEMPTS):
                self._cost.calls += 1
                response = self._resource.batch_get_item(
                    RequestItems={
                        self.table: {
                            "Keys": request,
                            "ProjectionExpression": ", ".join(names),
                            "ExpressionAttributeNames": names,
                        }
                    },
                    ReturnConsumedCapacity="TOTAL",
                )
                for used in response.get("ConsumedCapacity") or []:
                    self._cost.read_units += float(used.get("CapacityUnits") or 0)
                for row in response["Responses"].get(self.table, []):
                    k = json.dumps({n: row[n] for n in self.key_templates}, sort_keys=True)
                    key = by_key.get(k)
                    if key is not None:
                        mono = (
                            row.get(self.monotonic_attribute) if self.monotonic_attribute else None
                        )
                        out[key] = RecordState(
                            row.get("_fs_hash"),
                            _from_dynamo(row.get("_fs_synced_at")),
                            _from_dynamo(mono),
                        )
                request = (
                    (response.get("UnprocessedKeys") or {}).get(self.table, {}).get("Keys", [])
                )
                if not request:
                    break
                self._backoff(attempt)
        return out

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        """State by fleet key. The key templates are expanded with every field standing for
        the key (``PLANT#{id}`` with key ``id``), which is right whenever a template uses
        the key field only; otherwise reads miss and items are simply fetched and written."""
        if not keys:
            return {}
        return await self._run(self._read, {k: self._key_of(k, _KeyForEveryField(k)) for k in keys})

    # --- writes ----------------------------------------------------------------------------

    def _batch(self, records: Sequence[Record]) -> WriteResult:
        result = WriteResult()
        requests = [{"PutRequest": {"Item": self._item(r)}} for r in records]
        keys_of = [json.dumps(self._key_of(r.key, r.item), sort_keys=True) for r in records]
        by_item = dict(zip(keys_of, (r.key for r in records), strict=True))
        for attempt in range(_ATTEMPTS):
            self._cost.calls += 1
            try:
                response = self._client.batch_write_item(
                    RequestItems={self.table: [self._serialize(r) for r in requests]},
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as error:
                if error.response["Error"]["Code"] in _THROTTLES:
                    self._cost.throttles += 1
                    self._backoff(attempt)
                    continue
                reason = f"dynamodb refused the batch: {error.response['Error']['Message']}"
                result.failed.update({by_item[k]: reason for k in keys_of})
                return result
            for used in response.get("ConsumedCapacity") or []:
                self._cost.write_units += float(used.get("CapacityUnits") or 0)
            left = (response.get("UnprocessedItems") or {}).get(self.table, [])
            self._cost.unprocessed_items += len(left)
            left_keys = {
                json.dumps(
                    {n: self._plain(r["PutRequest"]["Item"][n]) for n in self.key_templates},
                    sort_keys=True,
                )
                for r in left
            }
            result.written += [by_item[k] for k in keys_of if k not in left_keys]
            if not left:
                return result
            keys_of = [k for k in keys_of if k in left_keys]
            requests = [
                {"PutRequest": {"Item": self._deserialize(r["PutRequest"]["Item"])}} for r in left
            ]
            self._backoff(attempt)
        reason = f"dynamodb left the item unprocessed after {_ATTEMPTS} attempts"
        result.failed.update({by_item[k]: reason for k in keys_of})
        return result

    def _serialize(self, request: dict[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        item = request["PutRequest"]["Item"]
        return {"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in item.items()}}}

    def _deserialize(self, item: dict[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        return {k: deserializer.deserialize(v) for k, v in item.items()}

    @staticmethod
    def _plain(value: dict[str, Any]) -> Any:
        return next(iter(value.values()))

    def _put(self, record: Record) -> tuple[str, str | None]:
        """One conditional put: ('written'|'stale'|'failed', reason)."""
        table = self._resource.Table(self.table)
        m = self.monotonic_attribute
        assert m is not None
        key_names = list(self.key_templates)
        condition = "attribute_not_exists(#k0) OR attribute_not_exists(#m) OR #m <= :m"
        for attempt in range(_ATTEMPTS):
            self._cost.calls += 1
            try:
                response = table.put_item(
                    Item=self._item(record),
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#k0": key_names[0], "#m": m},
                    ExpressionAttributeValues={":m": _to_dynamo(record.attributes.get(m))},
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code == "ConditionalCheckFailedException":
                    self._cost.write_units += 1  # a refused conditional write still costs
                    return "stale", None
                if code in _THROTTLES:
                    self._cost.throttles += 1
                    self._backoff(attempt)
                    continue
                return "failed", f"dynamodb refused the item: {error.response['Error']['Message']}"
            used = response.get("ConsumedCapacity") or {}
            self._cost.write_units += float(used.get("CapacityUnits") or 1)
            return "written", None
        return "failed", f"dynamodb throttled the item {_ATTEMPTS} times"

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        merged, superseded = merge_batch(
            records, key=lambda r: json.dumps(self._key_of(r.key, r.item), sort_keys=True)
        )
        result = WriteResult()
        if not merged:
            return result
        bad = {}
        for record in merged:
            try:
                self._key_of(record.key, record.item)
            except (KeyError, IndexError, ValueError) as error:
                bad[record.key] = f"key template needs item field {error}"
        merged = [r for r in merged if r.key not in bad]
        result.failed.update(bad)
        if self.monotonic_attribute is None:
            done = await self._run(self._batch, merged)
        else:
            outcomes = await asyncio.gather(*(self._run(self._put, r) for r in merged))
            done = WriteResult()
            for record, (outcome, reason) in zip(merged, outcomes, strict=True):
                if outcome == "written":
                    done.written.append(record.key)
                elif outcome == "stale":
                    done.stale.append(record.key)
                else:
                    done.failed[record.key] = reason or "failed"
        result.written += done.written
        result.stale += done.stale
        result.failed.update(done.failed)
        written = set(done.written)
        result.written += [
            k
            for k in superseded
            if k not in written and k not in result.stale and k not in result.failed
        ]
        return result

    # --- dead letters ----------------------------------------------------------------------

    def _letter_key(self, run: str, key: str) -> dict[str, str]:
        return dict.fromkeys(self.key_templates, f"DLQ#{run}#{key}")

    def _write_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        table = self._resource.Table(self.table)
        with table.batch_writer(overwrite_by_pkeys=list(self.key_templates)) as writer:
            for le in letters:
                self._cost.calls += 1
                writer.put_item(
                    Item={
                        **self._letter_key(run, le.key),
                        "dlq_run": run,
                        "_fs_key": le.key,
                        "reason": le.reason,
                        "attempts": le.attempts,
                        "item": json.dumps(dict(le.item)),
                        "failed_at": _to_dynamo(le.failed_at),
                    }
                )

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        if letters:
            await self._run(self._write_letters, run, list(letters))

    def _read_letters(self, run: str) -> list[DeadLetter]:
        # A filtered Scan: fine for dead letters (few, read rarely, by a human or retry-failed).
        table = self._resource.Table(self.table)
        out: list[DeadLetter] = []
        kwargs: dict[str, Any] = {
            "FilterExpression": "dlq_run = :r",
            "ExpressionAttributeValues": {":r": run},
        }
        for _ in range(10_000):
            self._cost.calls += 1
            page = table.scan(**kwargs)
            for row in page.get("Items", []):
                out.append(
                    DeadLetter(
                        str(row["_fs_key"]),
                        str(row["reason"]),
                        int(row["attempts"]),
                        json.loads(str(row["item"])),
                        float(row["failed_at"]),
                    )
                )
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(out, key=lambda d: d.key)

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        letters = await self._run(self._read_letters, run)
        return letters if limit is None else letters[:limit]

    def _clear(self, run: str, keys: Sequence[str]) -> None:
        table = self._resource.Table(self.table)
        with table.batch_writer() as writer:
            for key in keys:
                self._cost.calls += 1
                writer.delete_item(Key=self._letter_key(run, key))

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        if keys:
            await self._run(self._clear, run, list(keys))
