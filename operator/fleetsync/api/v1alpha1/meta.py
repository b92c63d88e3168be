"""Object metadata as much of it as fleetsync reads, with Kubernetes' own name rules."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from fleetsync.api.v1alpha1._base import Model

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ObjectMeta(Model):
    # Kubernetes adds many fields (uid, resourceVersion, managedFields…): keep them, ignore them.
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)
    namespace: str | None = Field(None, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
