"""Which rate-limit key and rate a vendor's requests fall under, read from the spec alone.

Shared by the worker (each vendor's limiter), the controller (the keys a run's shards may
ask budget for) and ``fleetsync run`` (how many requests per second a run can make at most,
which sizes its processes). Pure: no clients are imported here.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from fleetsync.api.v1alpha1.syncjob import Source

__all__ = ["limit_for", "rate_bound", "static_host"]

# A vendor name no inventory can produce: what a vendor the spec does not name gets.
_UNNAMED = "\x00"
BASE_URL_FIELD = "{vendor.baseUrl}"


def static_host(url: str) -> str | None:
    """``host[:port]`` of ``url``, or None when it has none or it is templated."""
    parts = urlsplit(url)
    if not parts.hostname or "{" in parts.netloc:
        return None
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


def limit_for(source: Source, vendor: str) -> tuple[str | None, float | None]:
    """The (key, requests/s) of ``vendor``'s rate limit, or (None, None) when unlimited."""
    override = source.vendors.items.get(vendor) if source.vendors else None
    limit = override.rate_limit if override and override.rate_limit else source.rate_limit
    if limit is None:
        return None, None
    base = override.base_url if override and override.base_url else None
    key = limit.key or (base.rstrip("/") if base else None)
    if key is None:
        key = static_host(source.http.url) or f"vendor:{vendor}"
    return key, limit.requests_per_second


def rate_bound(source: Source) -> float:
    """The most requests per second a run can make: the sum of its keys' rates (the highest
    any vendor declares for a key), or infinity when a vendor may go unlimited or each
    vendor the inventory names has a key of its own (how many is not known in advance).

    A URL whose host is the vendor's ``baseUrl`` sends nothing for a vendor without one (the
    request has no host: the item fails before it is sent), so only vendors the spec names
    with a ``baseUrl`` count then."""
    needs_base = source.http.url.startswith(BASE_URL_FIELD)
    named = source.vendors.items if source.vendors else {}
    rates: dict[str, float] = {}
    for vendor in [_UNNAMED, *named]:
        override = named.get(vendor)
        if needs_base and not (override and override.base_url):
            continue  # its requests never leave
        key, rate = limit_for(source, vendor)
        if key is None or rate is None or key == f"vendor:{_UNNAMED}":
            return math.inf
        rates[key] = max(rates.get(key, 0.0), rate)
    return sum(rates.values())
