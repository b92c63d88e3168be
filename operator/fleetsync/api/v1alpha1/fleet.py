"""The fleet of a SyncJob: what its items are called and where the inventory comes from.

Inventories are untrusted input (whoever edits the ConfigMap or serves the listing chooses
them), so every source has bounds: inline ≤ 1,000 items, HTTP pages only from
``allowedHosts`` with capped pages, page bytes and items.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, JsonValue, field_validator, model_validator

from fleetsync.api.constants import INLINE_INVENTORY_MAX
from fleetsync.api.v1alpha1._base import Model
from fleetsync.api.v1alpha1._rules import (
    SECRET_KEY_PATTERN,
    cel_one_of,
    check_headers,
    finite_json,
    one_of,
)

__all__ = [
    "ConfigMapRef",
    "FileInventory",
    "Fleet",
    "GenerateInventory",
    "HttpInventory",
    "Inventory",
]

MIB = 1024 * 1024


class ConfigMapRef(Model):
    name: str = Field(min_length=1, description="ConfigMap in the SyncJob's namespace.")
    key: str = Field(
        min_length=1,
        pattern=SECRET_KEY_PATTERN,
        description="Key holding JSON (a list) or CSV with a header, UTF-8 encoded "
        "(other bytes fail the run, naming the offset).",
    )


class HttpInventory(Model):
    url: str = Field(min_length=1, description="First page of a paginated listing.")
    items_path: str = Field("$.items", description="JSONPath of the item list in a page.")
    next_page_path: str | None = Field(
        "$.next",
        description="JSONPath of the next page URL (absolute, or relative to the page). "
        "A next page on a host outside `allowedHosts` fails the run, unfetched.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with every page; pages come only from `allowedHosts`, so these "
        "headers never reach another host.",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Hosts pages may come from: `name` (any port) or `name:port`; default: "
        "the host of `url`.",
    )
    max_pages: int = Field(
        10_000, ge=1, le=1_000_000, description="More pages than this fail the run."
    )
    max_page_bytes: int = Field(
        8 * MIB,
        ge=1024,
        le=256 * MIB,
        description="A page larger than this (after decompression) fails the run.",
    )
    max_items: int = Field(
        1_000_000,
        ge=1,
        le=10_000_000,
        description="More items than this, over all pages, fail the run.",
    )
    timeout_seconds: float = Field(
        30.0, gt=0, le=300, description="Bound on one whole page request, body included."
    )

    _header_lines = field_validator("headers")(check_headers)


class FileInventory(Model):
    path: str = Field(
        min_length=1,
        description="JSON, JSON Lines or CSV file, UTF-8 encoded; `fleetsync run` only.",
    )
    format: Literal["auto", "json", "csv"] = "auto"


class GenerateInventory(Model):
    count: int = Field(ge=0, le=10_000_000, description="How many items to generate.")
    id_template: str = Field("item-{i}", description="The key of item i, e.g. `p-{i}`.")
    template: dict[str, str] = Field(
        default_factory=dict,
        description="Other fields; `{i}`, `{i%N}`, `{i//N}`, `{i+N}`, `{i*N}` expand per "
        "item, and `{i%[sungrow,huawei,solaredge]}` picks the names in turn.",
    )


class Inventory(Model):
    """Where the fleet's items come from: exactly one source."""

    model_config = cel_one_of(
        "inline", "configMapRef", "http", "sinkQuery", "file", "generate", what="inventory source"
    )

    inline: list[dict[str, JsonValue]] | None = Field(
        None,
        max_length=INLINE_INVENTORY_MAX,
        description="The items themselves. Numbers must be finite (NaN and Infinity are "
        "refused, in every inventory source).",
    )
    config_map_ref: ConfigMapRef | None = None
    http: HttpInventory | None = None
    sink_query: dict[str, JsonValue] | None = Field(
        None, description="Planned: items from a query on the sink. Not supported yet."
    )
    file: FileInventory | None = None
    generate: GenerateInventory | None = None

    @field_validator("inline")
    @classmethod
    def _finite(cls, items: list[dict[str, JsonValue]] | None) -> list[dict[str, JsonValue]] | None:
        for index, item in enumerate(items or ()):
            finite_json(item, f"[{index}]")
        return items

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        one_of(
            self,
            ("inline", "config_map_ref", "http", "sink_query", "file", "generate"),
            "inventory source",
        )
        if self.sink_query is not None:
            raise ValueError("sinkQuery is planned and not supported yet")
        return self


class Fleet(Model):
    kind: str = Field("item", min_length=1, description="Free text shown to humans.")
    key: str = Field(
        "id",
        min_length=1,
        description="Item field that identifies an item. Items sharing a key are one "
        "record: each is fetched and written, and `write.orderBy` decides which wins (see "
        "there). A key that is a NaN or Infinity number is refused.",
    )
    inventory: Inventory
