"""SyncJob v1alpha1: one run that brings a fleet's state from vendor APIs into a sink.

The single source of truth for validation; the CRD schema is generated from these models.
Field names and meanings follow ``shared/API.md``. The fleet and source parts live in
:mod:`.fleet` and :mod:`.source` and are re-exported here.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, JsonValue, field_validator, model_validator
from pydantic.config import JsonDict

from fleetsync.api.constants import MAX_SHARDS
from fleetsync.api.durations import parse_duration
from fleetsync.api.v1alpha1._base import Model
from fleetsync.api.v1alpha1._rules import (
    SECRET_KEY_PATTERN,
    SECRET_NAME_PATTERN,
    cel_one_of,
    one_of,
)
from fleetsync.api.v1alpha1.fleet import (
    ConfigMapRef,
    FileInventory,
    Fleet,
    GenerateInventory,
    HttpInventory,
    Inventory,
)
from fleetsync.api.v1alpha1.meta import ObjectMeta
from fleetsync.api.v1alpha1.source import (
    ITEM_PREFIX,
    Auth,
    Backoff,
    CircuitBreaker,
    Concurrency,
    HttpSource,
    OAuth2,
    RateLimit,
    Retry,
    SecretKeyRef,
    Source,
    VendorOverride,
    Vendors,
)
from fleetsync.api.v1alpha1.status import SyncJobStatus

__all__ = [
    "ITEM_PREFIX",
    "MAX_SHARDS",
    "Auth",
    "AwsCredentialsRef",
    "Backoff",
    "CircuitBreaker",
    "Concurrency",
    "ConfigMapRef",
    "DeadLetterPolicy",
    "DynamoSink",
    "DynamoTtl",
    "FileInventory",
    "Fleet",
    "GenerateInventory",
    "HttpInventory",
    "HttpSource",
    "Inventory",
    "OAuth2",
    "PostgresSink",
    "RateLimit",
    "Retry",
    "SecretKeyRef",
    "Sharding",
    "Sink",
    "Source",
    "SqliteSink",
    "SyncJob",
    "SyncJobSpec",
    "VendorOverride",
    "Vendors",
    "WorkerPod",
    "Write",
]

# --- sink ----------------------------------------------------------------------------------


class SqliteSink(Model):
    path: str = Field("fleetsync.db", min_length=1)
    table: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class AwsCredentialsRef(Model):
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=SECRET_NAME_PATTERN,
        description="Secret holding the access key pair.",
    )
    access_key_id_key: str = Field("aws_access_key_id", pattern=SECRET_KEY_PATTERN)
    secret_access_key_key: str = Field("aws_secret_access_key", pattern=SECRET_KEY_PATTERN)


class DynamoTtl(Model):
    attribute: str = Field(min_length=1)
    days: float = Field(gt=0, le=36_500)


class DynamoSink(Model):
    table: str = Field(min_length=3, max_length=255)
    region: str = "us-east-1"
    endpoint_url: str | None = None
    key: dict[str, str] = Field(
        default_factory=lambda: {"PK": "{key}"},
        min_length=1,
        max_length=2,
        description="Key attribute -> template, e.g. PK: 'PLANT#{id}'.",
    )
    batch_size: int = Field(25, ge=1, le=25)
    credentials_secret_ref: AwsCredentialsRef | None = None
    ttl: DynamoTtl | None = None
    create_table: bool = Field(False, description="Create the table (on-demand) if missing.")


class PostgresSink(Model):
    dsn_secret_ref: SecretKeyRef
    table: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    conflict_key: list[str] | None = Field(None, min_length=1)
    columns: dict[str, str] | None = Field(None, description="Attribute -> SQL type overrides.")


class Sink(Model):
    model_config = cel_one_of("sqlite", "dynamodb", "postgres", what="sink")

    sqlite: SqliteSink | None = None
    dynamodb: DynamoSink | None = None
    postgres: PostgresSink | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        one_of(self, ("sqlite", "dynamodb", "postgres"), "sink")
        return self


# --- run behaviour -------------------------------------------------------------------------


class Write(Model):
    skip_unchanged: bool = True
    fresh_for: str | None = Field(None, description="e.g. 30m: items synced since are skipped.")
    monotonic_on: str | None = Field(None, description="Never overwrite with older values.")
    order_by: str | None = Field(
        None,
        description="Items sharing a key (`fleet.key`) are merged before a write: the one "
        "with the greatest value of this attribute (or item field) wins; ties, and items "
        "without it, go to the later fetch. Across write batches the later write wins unless "
        "`monotonicOn` is set.",
    )

    @field_validator("fresh_for")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def fresh_for_seconds(self) -> float | None:
        return None if self.fresh_for is None else parse_duration(self.fresh_for)


# Every shard's last report is kept in the run's progress ConfigMaps (of 1 MiB each, in
# parts of 100 shards): 1,000 keeps that at most ten objects; auto plans at most 256, and
# more pods than maxParallelism's 1,000 never run at once (issue 14, item 9).
_COUNT_OR_AUTO: JsonDict = {
    "x-kubernetes-validations": [
        {
            "rule": f"type(self) == string || (self >= 1 && self <= {MAX_SHARDS})",
            "message": f"must be between 1 and {MAX_SHARDS}, or auto",
        }
    ]
}


class Sharding(Model):
    shards: int | Literal["auto"] = Field(
        "auto", description="Number of shards, or auto.", json_schema_extra=_COUNT_OR_AUTO
    )
    parallelism: int | Literal["auto"] = Field(
        "auto", description="Pods running at once, or auto.", json_schema_extra=_COUNT_OR_AUTO
    )
    max_parallelism: int = Field(32, ge=1, le=1000)

    @field_validator("shards", "parallelism")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= MAX_SHARDS:
            raise ValueError(f"must be between 1 and {MAX_SHARDS}, or auto")
        return value


class DeadLetterPolicy(Model):
    max_item_failures: int = Field(
        1000,
        ge=0,
        description="Past this many failed items the run is Failed (TooManyItemFailures), "
        "even while it goes on. A run in which items failed and none synced is Failed "
        "(AllItemsFailed) whatever this says; some failed within the limits: "
        "PartiallySucceeded.",
    )
    max_item_failure_percent: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Also Failed (TooManyItemFailures) when failed items are more than this "
        "percentage of the run's items, so one setting fits 100 and 100,000 items. Checked "
        "when every shard finished; unset: only maxItemFailures applies.",
    )


class WorkerPod(Model):
    resources: dict[str, dict[str, str]] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, JsonValue]] | None = None
    affinity: dict[str, JsonValue] | None = None
    priority_class_name: str | None = None
    image: str | None = None
    service_account_name: str | None = None


class SyncJobSpec(Model):
    fleet: Fleet
    source: Source
    sink: Sink | None = Field(
        None,
        description="Where records go: exactly one of sqlite, dynamodb, postgres. Optional: "
        "without it `fleetsync run` writes SQLite fleetsync.db next to the manifest, table "
        "<kind>s, and `fleetsync validate` and `run` say so. In a cluster set it: a pod's "
        "SQLite file goes with the pod.",
    )
    write: Write = Field(default_factory=Write)
    sharding: Sharding = Field(default_factory=Sharding)
    deadline_seconds: int | None = Field(None, ge=1, le=7 * 86400)
    suspend: bool = False
    dead_letter: DeadLetterPolicy = Field(default_factory=DeadLetterPolicy)
    worker: WorkerPod | None = None
    ttl_seconds_after_finished: int | None = Field(None, ge=0)

    @property
    def resolved_sink(self) -> Sink:
        """The sink, with the embedded SQLite default filled in."""
        if self.sink is not None:
            return self.sink
        table = re.sub(r"[^A-Za-z0-9_]", "_", self.fleet.kind) + "s"
        return Sink(sqlite=SqliteSink(table=table))


class SyncJob(Model):
    api_version: Literal["fleetsync.dev/v1alpha1"]
    kind: Literal["SyncJob"]
    metadata: ObjectMeta
    spec: SyncJobSpec
    status: SyncJobStatus | None = None
