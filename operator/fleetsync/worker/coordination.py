"""The shard's side of coordination: POST cumulative progress, receive budgets and verdicts.

In a pod the request carries the pod's projected service-account token (audience
``fleetsync``), which the controller verifies with TokenReview; locally it carries the
run's one-time token from ``fleetsync run``. Either way the token is read from a file at
each call so a rotated token is picked up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fleetsync.api.progress import ReplyWire, ReportWire

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpCoordinator"]


class HttpCoordinator:
    keeps_reports = True

    def __init__(self, url: str, *, token_file: Path | None, timeout: float = 5.0) -> None:
        self._url = url.rstrip("/") + "/v1/report"
        self._token_file = token_file
        import httpx  # here: shards in fleetsync run's own process never report over HTTP

        self._client: httpx.AsyncClient = httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def report(self, report: ReportWire) -> ReplyWire | None:
        headers = {}
        if self._token_file is not None:
            headers["Authorization"] = "Bearer " + self._token_file.read_text().strip()
        response = await self._client.post(self._url, json=report, headers=headers)
        if response.status_code != 200:
            return None
        reply: ReplyWire = response.json()
        return reply

    async def aclose(self) -> None:
        await self._client.aclose()
