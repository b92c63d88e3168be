"""The vendor simulator: one aiohttp server playing several vendors at once.

Deterministic by design: a payload is a function of (seed, vendor, id, version), malformed
ids are chosen by a hash, and random latency/errors come from a generator seeded per
request, so tests assert exact sink contents and repeat exactly. Every request is counted
per vendor per wall-clock second (429s included), so tests and benchmarks can prove that a
rate limit was held.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fleetsync.simulator.config import SimulatorConfig, VendorConfig

__all__ = ["Simulator", "expected_payload", "is_malformed"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from its parts."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_malformed(vendor: str, item: str, rate: float, *, seed: int = 0) -> bool:
    return rate > 0 and _unit(seed, "malformed", vendor, item) < rate


def expected_payload(vendor: str, item: str, *, seed: int = 0, version: int = 0) -> dict[str, Any]:
    """Exactly what the simulator serves for ``item`` (well-formed ids)."""
    u = _unit(seed, vendor, item, version)
    power = round(1 + 999 * u, 3)
    return {
        "data": {
            "id": item,
            "power": power,
            "today": round(power * 4.2, 3),
            "total": round(power * 1234.5, 3),
            "online": u > 0.05,
            "updated_at": datetime.fromtimestamp(_EPOCH + version * 60, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    }


@dataclass
class _VendorState:
    config: VendorConfig
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)
    accepted_per_second: Counter[int] = field(default_factory=Counter)
    auth_seen: Counter[str] = field(default_factory=Counter)  # hash of Authorization values
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    tokens_issued: int = 0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "byStatus": dict(self.by_status),
            "perSecond": {str(k): v for k, v in sorted(self.per_second.items())},
            "acceptedPerSecond": {str(k): v for k, v in sorted(self.accepted_per_second.items())},
            "maxPerSecond": max(self.accepted_per_second.values(), default=0),
            "maxOfferedPerSecond": max(self.per_second.values(), default=0),
            "authorizationSeen": dict(self.auth_seen),
            "tokensIssued": self.tokens_issued,
        }


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        config.check_host()
        self.config = config
        self.vendors = {name: _VendorState(v) for name, v in config.vendors.items()}
        self.started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._counter = 0

    # --- lifecycle -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/_sim/stats", self._stats)
        r.add_post("/_sim/reset", self._reset)
        r.add_route("PATCH", "/_sim/vendors/{vendor}", self._patch_vendor)
        r.add_put("/_sim/vendors/{vendor}", self._put_vendor)
        r.add_get("/_sim/requests", self._requests)
        r.add_post("/vendors/{vendor}/oauth/token", self._token)
        r.add_get("/vendors/{vendor}/inventory", self._inventory)
        r.add_get("/vendors/{vendor}/{kind}/{id}", self._item)
        r.add_get("/vendors/{vendor}/{kind}/{id}/{rest:.*}", self._item)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port, backlog=1024).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.config.host}:{port}"
        self.started = time.monotonic()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- helpers ---------------------------------------------------------------------------

    def _vendor(self, request: web.Request) -> _VendorState:
        state = self.vendors.get(request.match_info["vendor"])
        if state is None:
            raise web.HTTPNotFound(text="unknown vendor")
        return state

    def _count(self, state: _VendorState, request: web.Request, status: int) -> None:
        second = int(time.time())
        state.total += 1
        state.by_status[str(status)] += 1
        state.per_second[second] += 1
        if status != 429:
            state.accepted_per_second[second] += 1
        state.recent.append({"path": request.path, "status": status, "time": time.time()})

    def _version(self, config: VendorConfig) -> int:
        if config.change_every_seconds is None:
            return 0
        return int((time.monotonic() - self.started) // config.change_every_seconds)

    def _rng(self, vendor: str, item: str) -> random.Random:
        self._counter += 1
        return random.Random(f"{self.config.seed}|{vendor}|{item}|{self._counter}")

    async def _latency(self, config: VendorConfig, rng: random.Random) -> None:
        p50, p99 = config.latency.p50_ms, config.latency.p99_ms
        if p50 <= 0:
            return
        sigma = max(0.0, math.log(max(p99, p50) / p50) / _Z99)
        await asyncio.sleep(p50 * math.exp(sigma * rng.gauss(0, 1)) / 1000)

    def _authorised(self, state: _VendorState, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        if header:
            state.auth_seen[hashlib.sha256(header.encode()).hexdigest()[:16]] += 1
        config = state.config
        if config.api_key is not None:
            supplied = request.headers.get(config.api_key.header, "")
            if not secrets.compare_digest(supplied, config.api_key.value):
                return False
        if config.oauth2 is not None:
            token = (header or "").removeprefix("Bearer ").strip()
            expiry = state.tokens.get(token)
            if expiry is None or expiry < time.monotonic():
                return False
        return True

    # --- vendor routes ---------------------------------------------------------------------

    async def _item(self, request: web.Request) -> web.StreamResponse:
        state = self._vendor(request)
        config = state.config
        vendor, item = request.match_info["vendor"], request.match_info["id"]
        offset = time.monotonic() - self.started
        if any(o.start_seconds <= offset < o.end_seconds for o in config.outages):
            self._count(state, request, 503)
            return web.json_response({"error": "outage"}, status=503)
        if config.rate_limit is not None:
            second = int(time.time())
            if state.accepted_per_second[second] >= config.rate_limit.requests_per_second:
                self._count(state, request, 429)
                return web.json_response(
                    {"error": "rate limited"}, status=429, headers={"Retry-After": "1"}
                )
        if not self._authorised(state, request):
            self._count(state, request, 401)
            return web.json_response({"error": "unauthorized"}, status=401)
        rng = self._rng(vendor, item)
        # Count before the latency: the vendor's rate limit is on arrivals.
        status = 200
        if config.error_rate and rng.random() < config.error_rate:
            status = rng.choice((500, 503))
        version = self._version(config)
        etag = (
            f'"{hashlib.blake2b(f"{vendor}|{item}|{version}".encode(), digest_size=8).hexdigest()}"'
        )
        if status == 200 and config.etag and request.headers.get("If-None-Match") == etag:
            status = 304
        self._count(state, request, status)
        await self._latency(config, rng)
        if status >= 500:
            return web.json_response({"error": "vendor error"}, status=status)
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag})
        headers = {"ETag": etag} if config.etag else {}
        if is_malformed(vendor, item, config.malformed_rate, seed=self.config.seed):
            if _unit(self.config.seed, "kind", vendor, item) < 0.5:
                return web.Response(
                    body=b'{"data": {"id": ', content_type="application/json", headers=headers
                )
            return web.json_response({"data": {"id": item, "power": None}}, headers=headers)
        payload = expected_payload(vendor, item, seed=self.config.seed, version=version)
        return web.json_response(payload, headers=headers)

    async def _token(self, request: web.Request) -> web.Response:
        state = self._vendor(request)
        oauth = state.config.oauth2
        if oauth is None:
            raise web.HTTPNotFound(text="this vendor has no OAuth2")
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = (
                base64.b64decode(basic[6:]).decode(errors="replace").partition(":")
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if client_id != oauth.client_id or not secrets.compare_digest(
            str(client_secret or ""), oauth.client_secret
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        state.tokens[token] = time.monotonic() + oauth.token_ttl_seconds
        state.tokens_issued += 1
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": oauth.token_ttl_seconds,
            }
        )

    async def _inventory(self, request: web.Request) -> web.Response:
        state = self._vendor(request)
        vendor = request.match_info["vendor"]
        inventory = state.config.inventory
        if not self._authorised(state, request):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            page = int(request.query.get("page", "0"))
        except ValueError:
            return web.json_response({"error": "page must be an integer"}, status=400)
        start = page * inventory.page_size
        end = min(inventory.count, start + inventory.page_size)
        items = [
            {"id": inventory.id_template.format(vendor=vendor, i=i), "vendor": vendor}
            for i in range(start, end)
        ]
        more = end < inventory.count
        base = str(request.url.with_query({}))
        return web.json_response(
            {"items": items, "next": f"{base}?page={page + 1}" if more else None}
        )

    # --- control routes --------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"vendors": {name: state.stats() for name, state in self.vendors.items()}}
        )

    async def _reset(self, request: web.Request) -> web.Response:
        for name, state in list(self.vendors.items()):
            self.vendors[name] = _VendorState(state.config)
        self.started = time.monotonic()
        return web.json_response({"reset": True})

    async def _patch_vendor(self, request: web.Request) -> web.Response:
        name = request.match_info["vendor"]
        state = self.vendors.get(name)
        base = state.config.model_dump(by_alias=True) if state else {}
        try:
            config = VendorConfig.model_validate({**base, **(await request.json())})
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        if state is None:
            self.vendors[name] = _VendorState(config)
        else:
            state.config = config
        return web.json_response(config.model_dump(by_alias=True))

    async def _put_vendor(self, request: web.Request) -> web.Response:
        name = request.match_info["vendor"]
        try:
            config = VendorConfig.model_validate(await request.json())
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        self.vendors[name] = _VendorState(config)
        return web.json_response(config.model_dump(by_alias=True))

    async def _requests(self, request: web.Request) -> web.Response:
        vendor = request.query.get("vendor")
        out = {
            name: list(state.recent)
            for name, state in self.vendors.items()
            if vendor is None or name == vendor
        }
        return web.json_response(out)
