"""SyncJob v1alpha1: one run that brings a fleet's state from vendor APIs into a sink.

The single source of truth for validation; the CRD schema is generated from these models.
Field names and meanings follow ``shared/API.md``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic.config import JsonDict

from fleetsync.api.constants import INLINE_INVENTORY_MAX
from fleetsync.api.durations import parse_duration
from fleetsync.api.v1alpha1._base import Model
from fleetsync.api.v1alpha1.meta import ObjectMeta
from fleetsync.api.v1alpha1.status import SyncJobStatus

PositiveFloat = Annotated[float, Field(gt=0)]
ITEM_PREFIX = "$item."
_RETRY_ON = re.compile(r"^(\d{3}|[1-5]xx|timeout|connect)$")


def _cel_one_of(*fields: str, what: str) -> ConfigDict:
    """The API server's copy of :func:`_one_of`, as a CEL rule in the generated CRD."""
    present = ", ".join(f"has(self.{f})" for f in fields)
    rule: JsonDict = {
        "rule": f"[{present}].filter(x, x).size() == 1",
        "message": f"exactly one {what} is required ({', '.join(fields)})",
    }
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule]})


def _one_of(model: Model, names: tuple[str, ...], what: str) -> None:
    chosen = [n for n in names if getattr(model, n) is not None]
    if len(chosen) != 1:
        wire = ", ".join(type(model).model_fields[n].alias or n for n in names)
        found = ", ".join(type(model).model_fields[n].alias or n for n in chosen) or "none"
        raise ValueError(f"exactly one {what} is required ({wire}); found {found}")


# --- fleet ---------------------------------------------------------------------------------


class ConfigMapRef(Model):
    name: str = Field(min_length=1, description="ConfigMap in the SyncJob's namespace.")
    key: str = Field(min_length=1, description="Key holding JSON (a list) or CSV with a header.")


class HttpInventory(Model):
    url: str = Field(min_length=1, description="First page of a paginated listing.")
    items_path: str = Field("$.items", description="JSONPath of the item list in a page.")
    next_page_path: str | None = Field("$.next", description="JSONPath of the next page URL.")
    headers: dict[str, str] = Field(default_factory=dict)
    max_pages: int = Field(10_000, ge=1, description="Stop after this many pages (a loop guard).")


class FileInventory(Model):
    path: str = Field(min_length=1, description="JSON or CSV file; `fleetsync run` only.")
    format: Literal["auto", "json", "csv"] = "auto"


class GenerateInventory(Model):
    count: int = Field(ge=0, le=10_000_000, description="How many items to generate.")
    id_template: str = Field("item-{i}", description="The key of item i, e.g. `p-{i}`.")
    template: dict[str, str] = Field(
        default_factory=dict,
        description="Other fields; `{i}`, `{i%N}`, `{i//N}` expand per item.",
    )


class Inventory(Model):
    """Where the fleet's items come from: exactly one source."""

    model_config = _cel_one_of(
        "inline", "configMapRef", "http", "sinkQuery", "file", "generate", what="inventory source"
    )

    inline: list[dict[str, JsonValue]] | None = Field(None, max_length=INLINE_INVENTORY_MAX)
    config_map_ref: ConfigMapRef | None = None
    http: HttpInventory | None = None
    sink_query: dict[str, JsonValue] | None = Field(
        None, description="Planned: items from a query on the sink. Not supported yet."
    )
    file: FileInventory | None = None
    generate: GenerateInventory | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        _one_of(
            self,
            ("inline", "config_map_ref", "http", "sink_query", "file", "generate"),
            "inventory source",
        )
        if self.sink_query is not None:
            raise ValueError("sinkQuery is planned and not supported yet")
        return self


class Fleet(Model):
    kind: str = Field("item", min_length=1, description="Free text shown to humans.")
    key: str = Field("id", min_length=1, description="Item field that identifies an item.")
    inventory: Inventory


# --- source --------------------------------------------------------------------------------


class SecretKeyRef(Model):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1, description="May be templated from the item, e.g. `{vendor}`.")


class OAuth2(Model):
    token_url: str = Field(min_length=1)
    client_id_ref: SecretKeyRef
    client_secret_ref: SecretKeyRef
    scopes: list[str] = Field(default_factory=list)


class Auth(Model):
    model_config = _cel_one_of("secretRef", "oauth2", what="auth method")

    secret_ref: SecretKeyRef | None = None
    scheme: str = Field("Bearer", description="Prefix of the header value; empty for none.")
    header: str = Field("Authorization", min_length=1)
    oauth2: OAuth2 | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        _one_of(self, ("secret_ref", "oauth2"), "auth method")
        return self


class HttpSource(Model):
    url: str = Field(min_length=1, description="Templated from the item and its vendor.")
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    allowed_hosts: list[str] | None = Field(
        None, description="Hosts requests may go to; default: the hosts of the vendors' URLs."
    )
    timeout_seconds: float = Field(10.0, gt=0, le=300)


class RateLimit(Model):
    requests_per_second: float = Field(gt=0, le=100_000)
    key: str | None = Field(None, description="Budget shared by every run with the same key.")


class VendorOverride(Model):
    base_url: str | None = None
    rate_limit: RateLimit | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class Vendors(Model):
    by: str = Field("vendor", min_length=1, description="Item field naming the vendor.")
    items: dict[str, VendorOverride] = Field(default_factory=dict)


class Backoff(Model):
    base_seconds: float = Field(0.2, gt=0, le=60)
    max_seconds: float = Field(20.0, gt=0, le=3600)
    jitter: Literal["full", "equal", "none"] = "full"


class Retry(Model):
    max_attempts: int = Field(4, ge=1, le=20)
    backoff: Backoff = Field(default_factory=Backoff)
    retry_on: list[str] = Field(default_factory=lambda: ["429", "5xx", "timeout", "connect"])

    @field_validator("retry_on")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _RETRY_ON.match(value):
                raise ValueError(f"{value!r} is not a status (503), a class (5xx) or timeout")
        return values


class CircuitBreaker(Model):
    failure_rate_threshold: float = Field(50.0, gt=0, le=100)
    minimum_calls: int = Field(20, ge=1)
    window_seconds: float = Field(30.0, gt=0)
    open_seconds: float = Field(30.0, gt=0)
    half_open_calls: int = Field(5, ge=1)


class Concurrency(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.min <= self.initial && self.initial <= self.max",
                    "message": "must satisfy min <= initial <= max",
                }
            ]
        }
    )

    mode: Literal["adaptive", "fixed"] = "adaptive"
    initial: int = Field(16, ge=1, le=10_000)
    min: int = Field(1, ge=1, le=10_000)
    max: int = Field(256, ge=1, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.initial <= self.max:
            raise ValueError("must satisfy min <= initial <= max")
        return self


class Source(Model):
    http: HttpSource
    vendors: Vendors | None = None
    rate_limit: RateLimit | None = None
    retry: Retry = Field(default_factory=Retry)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Record attribute -> JSONPath into the response, or `$item.<field>` for "
        "a field of the inventory item (e.g. a composite conflict key's second column).",
    )

    @field_validator("mapping")
    @classmethod
    def _jsonpaths(cls, mapping: dict[str, str]) -> dict[str, str]:
        for attribute, path in mapping.items():
            if path.startswith(ITEM_PREFIX):
                if not path[len(ITEM_PREFIX) :]:
                    raise ValueError(f"{attribute}: {path!r} names no item field")
                continue
            try:
                parse_jsonpath(path)
            except Exception as error:  # jsonpath-ng raises JsonPathParserError and plain ones
                raise ValueError(f"{attribute}: {path!r} is not a JSONPath ({error})") from None
        return mapping


# --- sink ----------------------------------------------------------------------------------


class SqliteSink(Model):
    path: str = Field("fleetsync.db", min_length=1)
    table: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class AwsCredentialsRef(Model):
    name: str = Field(min_length=1, description="Secret holding the access key pair.")
    access_key_id_key: str = "aws_access_key_id"
    secret_access_key_key: str = "aws_secret_access_key"


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
    model_config = _cel_one_of("sqlite", "dynamodb", "postgres", what="sink")

    sqlite: SqliteSink | None = None
    dynamodb: DynamoSink | None = None
    postgres: PostgresSink | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        _one_of(self, ("sqlite", "dynamodb", "postgres"), "sink")
        return self


# --- run behaviour -------------------------------------------------------------------------


class Write(Model):
    skip_unchanged: bool = True
    fresh_for: str | None = Field(None, description="e.g. 30m: items synced since are skipped.")
    monotonic_on: str | None = Field(None, description="Never overwrite with older values.")
    order_by: str | None = Field(None, description="Items sharing a key apply in this order.")

    @field_validator("fresh_for")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def fresh_for_seconds(self) -> float | None:
        return None if self.fresh_for is None else parse_duration(self.fresh_for)


_COUNT_OR_AUTO: JsonDict = {
    "x-kubernetes-validations": [
        {
            "rule": "type(self) == string || (self >= 1 && self <= 10000)",
            "message": "must be between 1 and 10000, or auto",
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
        if isinstance(value, int) and not 1 <= value <= 10_000:
            raise ValueError("must be between 1 and 10000, or auto")
        return value


class DeadLetterPolicy(Model):
    max_item_failures: int = Field(1000, ge=0, description="Past this the run fails.")


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
    sink: Sink | None = Field(None, description="Default: SQLite fleetsync.db, table <kind>s.")
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
