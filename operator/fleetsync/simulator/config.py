"""The simulator's configuration: which vendors it plays and how each behaves."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "ApiKey",
    "Inventory",
    "Latency",
    "OAuth2Client",
    "Outage",
    "RateLimit",
    "SimulatorConfig",
    "VendorConfig",
]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Latency(_Model):
    """A log-normal response time given by its median and 99th percentile."""

    p50_ms: float = Field(5.0, ge=0)
    p99_ms: float = Field(20.0, ge=0)


class RateLimit(_Model):
    """At most ``requests_per_second`` accepted per wall-clock second; the rest get 429."""

    requests_per_second: float = Field(gt=0)


class Outage(_Model):
    """503 for every request between these offsets from the simulator's start."""

    start_seconds: float = Field(ge=0)
    end_seconds: float = Field(gt=0)


class OAuth2Client(_Model):
    client_id: str
    client_secret: str
    token_ttl_seconds: float = Field(3600, gt=0)


class ApiKey(_Model):
    header: str = "X-Api-Key"
    value: str


class Inventory(_Model):
    count: int = Field(100, ge=0)
    page_size: int = Field(100, ge=1, le=10_000)
    id_template: str = "{vendor}-{i}"


class VendorConfig(_Model):
    latency: Latency = Field(default_factory=Latency)
    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction answered 500/503.")
    rate_limit: RateLimit | None = None
    outages: list[Outage] = Field(default_factory=list)
    malformed_rate: float = Field(0.0, ge=0, le=1, description="Fraction of ids, by hash.")
    etag: bool = True
    oauth2: OAuth2Client | None = None
    api_key: ApiKey | None = None
    inventory: Inventory = Field(default_factory=Inventory)
    change_every_seconds: float | None = Field(
        None, gt=0, description="Values change this often (None: never, so ETags hold)."
    )


class SimulatorConfig(_Model):
    vendors: dict[str, VendorConfig] = Field(default_factory=dict)
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    allow_non_loopback: bool = False

    @field_validator("vendors")
    @classmethod
    def _names(cls, vendors: dict[str, VendorConfig]) -> dict[str, VendorConfig]:
        for name in vendors:
            if not name or "/" in name:
                raise ValueError(f"vendor name {name!r} must be non-empty without '/'")
        return vendors

    def check_host(self) -> None:
        """Loopback only unless asked: a test tool must not listen on the network."""
        if self.allow_non_loopback:
            return
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            raise ValueError(f"host {self.host!r} is not loopback (set allowNonLoopback)")
