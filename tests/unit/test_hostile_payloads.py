"""Issue 14, items 6 and 10: whatever a vendor answers ends as a record or as a PayloadError
with a reason; bodies are bounded after decompression (in-memory transport here; the real
server versions are in tests/integration/test_hostile_vendors.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleetsync.api.v1alpha1._rules import _finite_float, _refuse_constant, loads_finite
from fleetsync.errors import PayloadError
from fleetsync.worker.fetch import AllowedHosts, BodyTooLarge, Fetcher
from fleetsync.worker.mapping import Mapper, content_hash

HOST = "http://vendor.test"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"power": NaN}', "unusable number"),
        (b'{"power": Infinity}', "unusable number"),
        (b'{"power": -Infinity}', "unusable number"),
        (b'{"power": 1e999}', "unusable number"),
        (b'{"power": ' + b"9" * 5000 + b"}", "unusable number"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b'{"power": "\xff"}', "not UTF-8"),
        (b'{"power": ', "invalid JSON"),
    ],
)
def test_bodies_that_cannot_be_records_fail_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        Mapper({"p": "$.power"}).decode(body)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"power": 2**64}, "64 bits"),
        ({"power": "\ud800"}, "unpaired surrogate"),
        ({"power": {"\udfff": 1}}, "unpaired surrogate"),
    ],
)
def test_mapped_values_a_sink_cannot_store_fail_with_a_reason(
    document: dict[str, object], reason: str
) -> None:
    with pytest.raises(PayloadError, match=reason):
        Mapper({"p": "$.power"}).apply(document)  # type: ignore[arg-type]


def test_deep_values_are_refused_and_shallow_ones_kept() -> None:
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(PayloadError, match="nests deeper"):
        Mapper({"p": "$.power"}).apply({"power": deep})  # type: ignore[dict-item]
    attributes = Mapper({"p": "$.power"}).apply({"power": [[1.5, 2**62]]})
    assert attributes == {"p": [[1.5, 2**62]]}
    assert content_hash(attributes)


def test_a_filter_over_mixed_types_maps_or_fails_with_a_reason() -> None:
    mapper = Mapper({"p": "$.items[?(@.v > 5)].v"})
    try:
        attributes = mapper.apply({"items": [{"v": "text"}, {"v": None}, {"v": 7}]})
    except PayloadError as error:
        assert "mapping p" in str(error)
    else:
        assert attributes == {"p": 7}


# --- bodies over the limit -------------------------------------------------------------------


async def chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def fetcher_for(handler: httpx.MockTransport, limit: int = 8 << 20) -> Fetcher:
    return Fetcher(
        allowed=AllowedHosts(["vendor.test"]),
        timeout_seconds=5,
        max_connections=4,
        transport=handler,
        max_response_bytes=limit,
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw", "identity"])
async def test_a_body_over_the_limit_after_decompression_fails_the_item(encoding: str) -> None:
    inflated = b'{"pad": "' + b"0" * (9 << 20) + b'"}'
    if encoding == "gzip":
        body = gzip.compress(inflated)
    elif encoding == "deflate":
        body = zlib.compress(inflated)
    elif encoding == "deflate-raw":  # servers that send deflate without the zlib header
        squeeze = zlib.compressobj(wbits=-15)
        body = squeeze.compress(inflated) + squeeze.flush()
    else:
        body = inflated
    headers = {"content-encoding": encoding.removesuffix("-raw")}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=chunks(body))

    fetcher = fetcher_for(httpx.MockTransport(handler))
    try:
        with pytest.raises(BodyTooLarge, match="over the limit of 8388608 bytes"):
            await fetcher.fetch("GET", HOST + "/x", {})
    finally:
        await fetcher.aclose()
    assert issubclass(BodyTooLarge, PayloadError)  # permanent: the item fails, not retried


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_under_the_limit_is_decoded(encoding: str) -> None:
    payload = b'{"power": 12.5}' * 1
    body = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        return httpx.Response(200, headers={"content-encoding": encoding}, content=chunks(body))

    fetcher = fetcher_for(httpx.MockTransport(handler))
    try:
        result = await fetcher.fetch("GET", HOST + "/x", {})
    finally:
        await fetcher.aclose()
    assert result.body == payload


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"content-encoding": "br"}, b"x", "not supported"),
        ({"content-encoding": "gzip"}, b"not gzip at all", "not valid gzip"),
        ({"content-length": str(9 << 20)}, b"", "over the limit"),
    ],
)
async def test_undecodable_or_declared_too_large_bodies_fail_with_a_reason(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=chunks(body))

    fetcher = fetcher_for(httpx.MockTransport(handler))
    try:
        with pytest.raises(PayloadError, match=reason):
            await fetcher.fetch("GET", HOST + "/x", {})
    finally:
        await fetcher.aclose()


def _reference_loads(text: str | bytes) -> object:
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


_JSON_PIECES = st.sampled_from(
    ['{"a":', "1", "1.5", "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "[", "]", "}",
     ",", '"x"', '"\\ud800"', "\ufeff", " ", "null", "tr", "9" * 30, "0.1e-400"]
)  # fmt: skip


@given(
    pieces=st.lists(_JSON_PIECES, max_size=8),
    encoding=st.sampled_from([None, "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"]),
    junk=st.sampled_from([b"", b"\xff", b"\xc3"]),
)
@example(pieces=["\ufeff", "1"], encoding=None, junk=b"")  # a text's BOM is refused
@settings(max_examples=400, deadline=None)
def test_the_shared_decoder_answers_as_json_loads_does(
    pieces: list[str], encoding: str | None, junk: bytes
) -> None:
    # One decoder is kept for every vendor answer: it must accept, refuse and fail exactly
    # as json.loads with the same hooks, for text and for bytes in any JSON encoding.
    text = "".join(pieces)
    if encoding is None:
        document: str | bytes = text
    else:
        try:
            document = text.encode(encoding) + junk
        except UnicodeEncodeError:
            document = text.encode(encoding, "surrogatepass") + junk

    def outcome(loads: Callable[[str | bytes], object]) -> object:
        try:
            return ("value", loads(document))
        except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
            return (type(error).__name__, str(error))

    assert repr(outcome(loads_finite)) == repr(outcome(_reference_loads))


@given(
    attributes=st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=8,
        ),
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None)
def test_the_content_hash_is_the_one_stored_by_earlier_versions(
    attributes: dict[str, object],
) -> None:
    # Hashes are stored with each row: a different canonical form after an upgrade would
    # make every item look changed once. The hash is blake2b-128 of json.dumps' canonical form.
    canonical = json.dumps(attributes, sort_keys=True, separators=(",", ":"), default=str)
    stored = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    assert content_hash(attributes) == stored  # type: ignore[arg-type]
