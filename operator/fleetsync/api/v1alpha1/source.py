"""How a SyncJob fetches one item: the HTTP request, its credentials and vendors, and the
policies around it (rate limit, retry, breaker, concurrency, mapping).

Item fields reach URLs, headers and Secret keys through templates, so the rules that keep
an item from choosing another path, header line or Secret are stated (and validated) here.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import ConfigDict, Field, field_validator, model_validator

from fleetsync.api.v1alpha1._base import Model
from fleetsync.api.v1alpha1._rules import (
    SECRET_NAME_PATTERN,
    cel_one_of,
    check_header_value,
    check_headers,
    check_template,
    is_secret_key,
    one_of,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ITEM_PREFIX",
    "MAX_VENDORS",
    "Auth",
    "Backoff",
    "CircuitBreaker",
    "Concurrency",
    "HttpSource",
    "OAuth2",
    "RateLimit",
    "Retry",
    "SecretKeyRef",
    "Source",
    "VendorOverride",
    "Vendors",
]

ITEM_PREFIX = "$item."
MAX_VENDORS = 256
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_RETRY_ON = re.compile(r"^(\d{3}|[1-5]xx|timeout|connect)$")


class SecretKeyRef(Model):
    name: str = Field(
        min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN, description="Secret name."
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        description="Key in the Secret: `[-._a-zA-Z0-9]+`, not `.` or `..`. May be templated "
        "from the item, e.g. `{vendor}`; an item whose value makes an invalid key fails "
        "unsent, without any file being read.",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        fields = check_template(key, raw_allowed=False)
        literal = re.sub(r"\{[^{}]*\}", "", key)
        if not fields and not is_secret_key(key):
            raise ValueError("must be a Secret key: [-._a-zA-Z0-9]+, not '.' or '..'")
        if fields and literal and not is_secret_key(literal.replace(".", "_")):
            raise ValueError("its text around {fields} may hold only - . _ a-z A-Z 0-9")
        return key


class OAuth2(Model):
    token_url: str = Field(min_length=1)
    client_id_ref: SecretKeyRef
    client_secret_ref: SecretKeyRef
    scopes: list[str] = Field(default_factory=list)


class Auth(Model):
    model_config = cel_one_of("secretRef", "oauth2", what="auth method")

    secret_ref: SecretKeyRef | None = None
    scheme: str = Field("Bearer", description="Prefix of the header value; empty for none.")
    header: str = Field("Authorization", min_length=1)
    oauth2: OAuth2 | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        one_of(self, ("secret_ref", "oauth2"), "auth method")
        check_header_value(self.header, self.scheme)
        return self


class HttpSource(Model):
    url: str = Field(
        min_length=1,
        description="Templated from the item and its vendor: `{field}`, `{vendor}`, "
        "`{vendor.baseUrl}`. Item values are percent-encoded (RFC 3986: all but "
        "`A-Za-z0-9-._~`) wherever they land, path segment or query value, so a value "
        "cannot add a segment, a query or a fragment; a path that would gain a `.` or `..` "
        "segment fails the item. `{vendor.baseUrl}` comes from this manifest and is inserted "
        "as is; `{field:raw}` inserts an item value unencoded (only for inventories you "
        "trust; the host is still checked against `allowedHosts`).",
    )
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Templated like `url` but not encoded; an item value holding CR, LF or "
        "NUL fails the item, unsent.",
    )
    auth: Auth | None = None
    allowed_hosts: list[str] | None = Field(
        None,
        description="Hosts requests may go to: `name` (any port) or `name:port`; default: the "
        "hosts of the vendors' URLs. A request to any other host fails its item, unsent.",
    )
    timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Bound on a whole request: connect, headers and the full body, however "
        "slowly it trickles. Past it the attempt is a timeout (retried per `retry.retryOn`).",
    )
    max_response_bytes: int = Field(
        DEFAULT_MAX_RESPONSE_BYTES,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest response body accepted, counted after decompression (gzip, "
        "deflate); a larger one fails the item (not retried). Default 8 MiB.",
    )

    @field_validator("url")
    @classmethod
    def _url_template(cls, url: str) -> str:
        check_template(url)
        return url

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            check_header_value(name, value)
            check_template(value, raw_allowed=False)
        return headers


class RateLimit(Model):
    requests_per_second: float = Field(gt=0, le=100_000)
    key: str | None = Field(None, description="Budget shared by every run with the same key.")


class VendorOverride(Model):
    base_url: str | None = Field(
        None,
        description="What `{vendor.baseUrl}` expands to in `source.http.url` for this "
        "vendor's items; its host is allowed by default (see `allowedHosts`).",
    )
    rate_limit: RateLimit | None = Field(
        None, description="This vendor's own limit, in place of `source.rateLimit`."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent to this vendor only, added to `source.http.headers`.",
    )

    _header_lines = field_validator("headers")(check_headers)


class Vendors(Model):
    by: str = Field(
        "vendor",
        min_length=1,
        description=f"Item field naming the vendor. A run serves at most {MAX_VENDORS} "
        "distinct vendors: an inventory with more distinct values fails the run (name a "
        "field with few values, such as the vendor's name, not one per item).",
    )
    items: dict[str, VendorOverride] = Field(
        default_factory=dict,
        max_length=MAX_VENDORS,
        description="Per-vendor settings, keyed by the value of the `by` field.",
    )


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
    max_outage_seconds: float = Field(
        300.0,
        gt=0,
        description="How long items of a vendor whose breaker is open wait for it to close "
        "(measured from when it opened, through half-open probes that fail) before they "
        "fail with the cause of the vendor's last real answer. Default 300 s: longer than "
        "the short outages vendors typically have (a restart, a deploy), shorter than a "
        "schedule interval, so a run gives up before the next one starts.",
    )


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
