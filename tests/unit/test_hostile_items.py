"""Issue 14, items 1 and 3: an item's fields choose neither the Secret that is sent, nor the
path, query or header lines of the request that carries it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetsync.api.manifest import parse_manifest
from fleetsync.api.v1alpha1 import Source, SyncJob
from fleetsync.errors import HostNotAllowedError, ManifestError, PayloadError
from fleetsync.worker.fetch import AllowedHosts, Fetcher
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.template import expand_header, expand_url
from fleetsync.worker.vendors import VendorRuntime

BASE = "http://api.vendor.test"


def manifest(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "plants"},
        "spec": {"fleet": {"inventory": {"inline": [{"id": "p-1"}]}}, "source": source},
    }


def source_of(source: dict[str, Any]) -> Source:
    job = parse_manifest(manifest(source))
    assert isinstance(job, SyncJob)
    return job.spec.source


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A mounted-Secrets directory holding a vendor key and, next to it, a database DSN."""
    (tmp_path / "vendor-keys").mkdir()
    (tmp_path / "vendor-keys" / "acme").write_text("vendor-token\n")
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "dsn").write_text("postgresql://app:hunter2@db/prod\n")
    return tmp_path


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    fetcher = Fetcher(
        allowed=AllowedHosts(["api.vendor.test"]),
        timeout_seconds=2,
        max_connections=4,
        transport=transport,
    )
    yield fetcher
    await fetcher.aclose()


def builder(source: Source, secrets_dir: Path, fetcher: Fetcher) -> RequestBuilder:
    return RequestBuilder(source, secrets=SecretResolver(str(secrets_dir)), fetcher=fetcher)


# --- 1. Secret keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account", ["../pg/dsn", "/etc/passwd", "..", ".", "acme/../../pg/dsn", "a b", "", "ac\nme"]
)
async def test_a_templated_secret_key_outside_the_key_alphabet_fails_the_item_unread(
    secrets_dir: Path, fetcher: Fetcher, account: str
) -> None:
    source = source_of(
        {
            "http": {
                "url": BASE + "/plants/{id}",
                "auth": {"secretRef": {"name": "vendor-keys", "key": "{account}"}},
            }
        }
    )
    requests = builder(source, secrets_dir, fetcher)
    vendor = VendorRuntime("default", source, limiter=None)
    with pytest.raises(PayloadError, match=r"secretRef\.key .*invalid Secret key") as caught:
        await requests.build(vendor, {"id": "p-1", "account": account})
    assert "hunter2" not in str(caught.value) and "postgresql" not in str(caught.value)
    good = await requests.build(vendor, {"id": "p-1", "account": "acme"})
    assert good.headers["Authorization"] == "Bearer vendor-token"


@pytest.mark.parametrize("key", ["../pg/dsn", "..", ".", "/etc/passwd", "a b"])
def test_a_static_secret_key_that_is_no_key_is_a_manifest_error(key: str) -> None:
    with pytest.raises(ManifestError) as caught:
        source_of({"http": {"url": BASE, "auth": {"secretRef": {"name": "keys", "key": key}}}})
    assert caught.value.problems[0][0] == "spec.source.http.auth.secretRef.key"


@pytest.mark.parametrize("name", ["../pg", "Keys", "/etc", "a/b"])
def test_a_secret_name_that_is_no_name_is_a_manifest_error(name: str) -> None:
    with pytest.raises(ManifestError) as caught:
        source_of({"http": {"url": BASE, "auth": {"secretRef": {"name": name, "key": "k"}}}})
    assert caught.value.problems[0][0] == "spec.source.http.auth.secretRef.name"


def test_a_secret_key_template_with_a_format_spec_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match=r"secretRef\.key"):
        source_of(
            {"http": {"url": BASE, "auth": {"secretRef": {"name": "k", "key": "{vendor:raw}"}}}}
        )


async def test_a_declared_vendor_that_is_no_secret_key_fails_at_start(
    secrets_dir: Path, fetcher: Fetcher
) -> None:
    source = source_of(
        {
            "http": {
                "url": "{vendor.baseUrl}/x",
                "auth": {"secretRef": {"name": "vendor-keys", "key": "{vendor}"}},
            },
            "vendors": {"items": {"../pg": {"baseUrl": BASE}}},
        }
    )
    with pytest.raises(ManifestError) as caught:
        builder(source, secrets_dir, fetcher)
    assert caught.value.problems[0][0] == "spec.source.vendors.items.../pg"


def test_the_resolver_itself_refuses_a_traversing_key(secrets_dir: Path) -> None:
    resolver = SecretResolver(str(secrets_dir))
    with pytest.raises(PayloadError):
        resolver.get("vendor-keys", "../pg/dsn", field="f")
    with pytest.raises(PayloadError):
        resolver.get("..", "pg", field="f")


def test_a_secret_file_that_is_not_utf8_is_named_without_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k").write_bytes(b"s3cr\xffet-value")
    with pytest.raises(ManifestError) as caught:
        SecretResolver(str(tmp_path)).get("keys", "k", field="spec.x")
    assert "s3cr" not in str(caught.value) and "not UTF-8" in str(caught.value)


async def test_a_credential_with_a_line_break_is_not_sent(tmp_path: Path, fetcher: Fetcher) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k").write_text("tok\r\nX-Evil: 1")
    source = source_of(
        {"http": {"url": BASE + "/{id}", "auth": {"secretRef": {"name": "keys", "key": "k"}}}}
    )
    requests = builder(source, tmp_path, fetcher)
    with pytest.raises(PayloadError, match="line break or control") as caught:
        await requests.build(VendorRuntime("default", source, limiter=None), {"id": "p"})
    assert "tok" not in str(caught.value)


# --- 3. URLs and headers ---------------------------------------------------------------------


def test_an_item_value_stays_inside_its_path_segment() -> None:
    url = expand_url(BASE + "/plants/{id}/realtime", {"id": "../../admin/users?all=1#"})
    parts = urlsplit(url)
    assert parts.path == "/plants/..%2F..%2Fadmin%2Fusers%3Fall%3D1%23/realtime"
    assert parts.query == "" and parts.fragment == ""
    assert httpx.URL(url).path == "/plants/../../admin/users?all=1#/realtime"  # one segment


def test_an_item_value_stays_inside_its_query_value() -> None:
    url = expand_url(BASE + "/plants?id={id}&v=1", {"id": "x&admin=true#f"})
    assert urlsplit(url).query == "id=x%26admin%3Dtrue%23f&v=1"


@pytest.mark.parametrize("value", ["..", "."])
def test_a_value_that_makes_a_dot_segment_fails_the_item(value: str) -> None:
    with pytest.raises(PayloadError, match=r"'\.\.' segment"):
        expand_url(BASE + "/plants/{id}/realtime", {"id": value})


def test_an_encoded_dot_in_a_value_is_encoded_again_and_a_raw_one_is_refused() -> None:
    url = expand_url(BASE + "/plants/{id}", {"id": "%2e%2E"})
    assert url == BASE + "/plants/%252e%252E"
    with pytest.raises(PayloadError, match="segment"):
        expand_url(BASE + "/plants/{id:raw}", {"id": "%2e%2E"})


def test_unreserved_characters_and_unicode_are_encoded_per_rfc_3986() -> None:
    url = expand_url(BASE + "/p/{id}", {"id": "a-b_c.d~e f/ü"})
    assert url == BASE + "/p/a-b_c.d~e%20f%2F%C3%BC"


def test_raw_opts_out_per_placeholder_and_base_url_is_trusted() -> None:
    from fleetsync.worker.template import VendorName

    vendor = VendorName("acme", BASE + "/v1/")
    url = expand_url(
        "{vendor.baseUrl}/{path:raw}?id={id}", {"vendor": vendor, "path": "a/b", "id": "a/b"}
    )
    assert url == BASE + "/v1/a/b?id=a%2Fb"


@pytest.mark.parametrize("template", ["{id.__class__}", "{0}", "{id:>999999999}", "{id!r}"])
def test_templates_may_not_reach_python_internals(template: str) -> None:
    with pytest.raises(PayloadError):
        expand_url(BASE + "/" + template, {"id": "x"})
    with pytest.raises(ManifestError):
        source_of({"http": {"url": BASE + "/" + template}})


@pytest.mark.parametrize("value", ["a\r\nX-Admin: 1", "a\nb", "a\rb", "a\0b"])
def test_a_header_value_with_a_line_break_fails_the_item(value: str) -> None:
    with pytest.raises(PayloadError, match="X-Plant"):
        expand_header("X-Plant", "{id}", {"id": value})
    assert expand_header("X-Plant", "id={id}", {"id": "p 1/ü"}) == "id=p 1/ü"


def test_a_static_header_with_a_line_break_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="headers"):
        source_of({"http": {"url": BASE, "headers": {"X-A": "1\r\nX-B: 2"}}})


async def test_the_built_request_carries_encoded_values_and_the_credential_to_its_host(
    secrets_dir: Path, fetcher: Fetcher
) -> None:
    source = source_of(
        {
            "http": {
                "url": BASE + "/plants/{id}",
                "headers": {"X-Plant": "{id}"},
                "auth": {"secretRef": {"name": "vendor-keys", "key": "acme"}},
            }
        }
    )
    requests = builder(source, secrets_dir, fetcher)
    request = await requests.build(
        VendorRuntime("default", source, limiter=None), {"id": "../../admin/users?all=1#"}
    )
    assert urlsplit(request.url).path.count("/") == 2
    assert request.headers["Authorization"] == "Bearer vendor-token"


def _reference_expand_url(template: str, values: dict[str, object]) -> str:
    """expand_url without its fast paths: every field through the formatter's walk, every
    URL through the dot-segment walk (what the fast paths must agree with)."""
    from urllib.parse import quote, unquote

    from fleetsync.worker.template import _FORMATTER, _parsed

    out: list[str] = []
    for literal, field, trusted, _plain in _parsed(template):
        out.append(literal)
        if field is not None:
            value, _ = _FORMATTER.get_field(field, (), values)
            out.append(str(value) if trusted else quote(str(value), safe=""))
    url = "".join(out)
    for segment in urlsplit(url).path.split("/"):
        if unquote(segment) in (".", ".."):
            raise PayloadError("url: the expanded path has a '.' or '..' segment; not sent")
    return url


_URL_PIECES = st.sampled_from(
    ["/", ".", "..", "%2e", "%2E", "%2f", "\t", "\n", "a", "p-1", "?q=", "#", "{id}",
     "{id:raw}", "{n}", "{n:raw}", "{x__y}", "{1a}", "{²}", "{missing}", "{d[k]}", "{d.k}"]
)  # fmt: skip


@given(
    pieces=st.lists(_URL_PIECES, max_size=10),
    base=st.sampled_from([BASE, BASE + "/v1", "", "./", "..", "http://h/."]),
    value=st.text(st.sampled_from(["a", ".", "/", "%", "2", "e", "\t", "é"]), max_size=5),
)
@example(pieces=["/", "\t", ".", "/"], base=BASE, value="")  # urlsplit drops the tab
@example(pieces=["/", "%2E", "%2e"], base=BASE, value="")
@example(pieces=["{id:raw}"], base=BASE + "/", value="..")
@settings(max_examples=400, deadline=None)
def test_expand_url_fast_paths_agree_with_the_full_walk(
    pieces: list[str], base: str, value: str
) -> None:
    template = base + "".join(pieces)
    values: dict[str, object] = {"id": value, "n": 7, "x__y": 1, "²": 2, "d": {"k": value}}
    outcomes = []
    for expand in (expand_url, _reference_expand_url):
        try:
            outcomes.append(expand(template, values))
        except PayloadError as error:
            outcomes.append(f"PayloadError: {error}")
    assert outcomes[0] == outcomes[1]


_AUTHORITY_PIECES = st.sampled_from(
    ["api.vendor.test", "API.Vendor.TEST", "evil.test", ":", ":443", ":99999", "@", "\t", "\n",
     " ", "\\", "[", "]", "%2e", ".", "-", "0", "user:pw@", "::1"]
)  # fmt: skip


@given(
    scheme=st.sampled_from(["http://", "https://", "HTTP://", "ftp://", " http://", "http:/"]),
    authority=st.lists(_AUTHORITY_PIECES, max_size=4).map("".join),
    rest=st.sampled_from(["", "/", "/p-1", "?q=1", "#f", "/\t/x", "\\evil.test/", "@evil.test/"]),
)
@example(scheme="http://", authority="api.vendor.test", rest="@evil.test/")
@example(scheme="http://", authority="api.vendor.test\t.evil.test", rest="/")
@example(scheme="http://", authority="api.vendor.test:99999", rest="/")
@settings(max_examples=400, deadline=None)
def test_the_host_check_kept_per_authority_decides_as_a_full_parse(
    scheme: str, authority: str, rest: str
) -> None:
    # The verdict is kept per plain authority: asked twice (the second time from what was
    # kept, after another URL of the same authority), it must say what a full parse says.
    allowed = AllowedHosts(["api.vendor.test", "evil.test:443"])
    url = scheme + authority + rest

    def verdict(check: Callable[[str], None], url: str) -> str:
        try:
            check(url)
        except HostNotAllowedError as error:
            return f"refused: {error}"
        except ValueError as error:  # a port out of range: urlsplit's own refusal
            return f"ValueError: {error}"
        return "allowed"

    full = verdict(allowed._check_parsed, url)
    assert verdict(allowed.check, scheme + authority + "/other") == verdict(
        allowed._check_parsed, scheme + authority + "/other"
    )
    assert verdict(allowed.check, url) == full
    assert verdict(allowed.check, url) == full
