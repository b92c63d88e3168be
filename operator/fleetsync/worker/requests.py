"""Build each item's request: URL from the template, headers, and credentials.

Credentials are attached only after the URL passed the ``allowedHosts`` check (in
:class:`~fleetsync.worker.fetch.Fetcher`), and only as headers — never in a URL, where they
would end up in logs and dead-letter reasons.

Item values are untrusted: they are percent-encoded into the URL, refused in a header when
they hold a line break, and checked as a Secret key before a templated key reads any file
(see :mod:`fleetsync.worker.template` and :mod:`fleetsync.worker.secrets`). Errors name the
field, never the credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetsync.api.v1alpha1.syncjob import Source, SyncJobSpec
from fleetsync.errors import ManifestError, PayloadError
from fleetsync.worker.fetch import Fetcher
from fleetsync.worker.oauth2 import OAuth2Tokens
from fleetsync.worker.secrets import SecretResolver, SecretValue, check_reference
from fleetsync.worker.template import absent_fields, expand, expand_header, expand_url
from fleetsync.worker.vendors import VendorRuntime

__all__ = ["Request", "RequestBuilder", "template_problems"]

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    token: SecretValue | None = None


class RequestBuilder:
    def __init__(self, source: Source, *, secrets: SecretResolver, fetcher: Fetcher) -> None:
        self._source = source
        self._secrets = secrets
        self._oauth: OAuth2Tokens | None = None
        auth = source.http.auth
        if auth is not None and auth.oauth2 is not None:
            oauth = auth.oauth2
            field = "spec.source.http.auth.oauth2"
            self._oauth = OAuth2Tokens(
                fetcher,
                token_url=oauth.token_url,
                client_id=secrets.get(
                    oauth.client_id_ref.name, oauth.client_id_ref.key, field=f"{field}.clientIdRef"
                ),
                client_secret=secrets.get(
                    oauth.client_secret_ref.name,
                    oauth.client_secret_ref.key,
                    field=f"{field}.clientSecretRef",
                ),
                scopes=oauth.scopes,
            )

        if auth is not None and auth.secret_ref is not None:
            self._check_secret_refs(auth.secret_ref.name, auth.secret_ref.key)

    def _check_secret_refs(self, name: str, key: str) -> None:
        """Resolve the keys knowable before any item (a fixed key, or ``{vendor}`` over the
        declared vendors) so a missing one is an invalid config (exit 64) at start, not a
        dead letter per item."""
        field = "spec.source.http.auth.secretRef"
        if "{" not in key:
            self._secrets.get(name, key, field=field)
        elif key == "{vendor}" and self._source.vendors is not None:
            for vendor in self._source.vendors.items:
                try:
                    check_reference(name, vendor, field=field)
                except PayloadError:
                    reason = "is used as a Secret key ({vendor}) but is not a valid one"
                    raise ManifestError([(f"spec.source.vendors.items.{vendor}", reason)]) from None
                self._secrets.get(name, vendor, field=field)

    @property
    def token_requests(self) -> int:
        return self._oauth.requests if self._oauth else 0

    async def build(self, vendor: VendorRuntime, item: Mapping[str, object]) -> Request:
        http = self._source.http
        values = {**item, "vendor": vendor.template_value}
        url = expand_url(http.url, values)
        headers = {name: expand_header(name, value, values) for name, value in http.headers.items()}
        headers.update(vendor.headers)
        token: SecretValue | None = None
        auth = http.auth
        if auth is not None and auth.secret_ref is not None:
            field = "spec.source.http.auth.secretRef"
            key = expand(auth.secret_ref.key, values)
            check_reference(auth.secret_ref.name, key, field=field)
            token = self._secrets.get(auth.secret_ref.name, key, field=field)
        elif self._oauth is not None:
            token = await self._oauth.token()
        if token is not None and auth is not None:
            value = token.reveal()
            if _CONTROL.search(value):
                # Said without the value: HTTP libraries quote an illegal header in full.
                reason = "the credential holds a line break or control character; not sent"
                raise PayloadError(f"{auth.header}: {reason}")
            prefix = f"{auth.scheme} " if auth.scheme else ""
            headers[auth.header] = prefix + value
        return Request(method=http.method, url=url, headers=headers, token=token)

    async def unauthorized(self, request: Request) -> bool:
        """After a 401: refresh an OAuth2 token once. True if a retry may now succeed."""
        if self._oauth is None or request.token is None:
            return False
        self._oauth.invalidate(request.token)
        await self._oauth.token(stale=request.token)
        return True


def _templates(spec: SyncJobSpec) -> list[tuple[str, str, frozenset[str]]]:
    """(field path, template, names every item has anyway) for each item template."""
    http = spec.source.http
    vendor = frozenset({"vendor"})
    found = [("spec.source.http.url", http.url, vendor)]
    found += [(f"spec.source.http.headers.{n}", t, vendor) for n, t in http.headers.items()]
    if http.auth is not None and http.auth.secret_ref is not None:
        found.append(("spec.source.http.auth.secretRef.key", http.auth.secret_ref.key, vendor))
    dynamo = spec.resolved_sink.dynamodb
    if dynamo is not None:
        key = frozenset({"key"})
        found += [(f"spec.sink.dynamodb.key.{n}", t, key) for n, t in dynamo.key.items()]
    return found


def template_problems(
    spec: SyncJobSpec, items: Sequence[Mapping[str, object]]
) -> list[tuple[str, str]]:
    """Templates naming a field that none of ``items`` (the inventory's first few) has:
    each would fail every item, so ``fleetsync validate`` and the worker refuse them (64)."""
    problems: list[tuple[str, str]] = []
    for path, template, provided in _templates(spec):
        for field in absent_fields(template, items, provided=provided):
            reason = f"names {{{field}}}, which none of the first {len(items)} items has"
            problems.append((path, reason))
    return problems
