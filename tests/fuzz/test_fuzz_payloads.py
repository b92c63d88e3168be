"""Vendor payloads, fuzzed through the mapping: whatever the body, ``decode`` + ``apply``
give attributes (which hash, and are finite, UTF-8 and shallow) or a PayloadError with a
reason; never another exception, which would fail the item as an internal error."""

from __future__ import annotations

import json

from fuzzing import EXAMPLES, json_values
from hypothesis import given
from hypothesis import strategies as st

from fleetsync.api.v1alpha1._rules import finite_json
from fleetsync.errors import PayloadError
from fleetsync.sinks.base import JSONValue
from fleetsync.worker.mapping import MAX_DEPTH, Mapper, content_hash

MAPPINGS = [
    example["spec"]
    .get("source", example["spec"].get("jobTemplate", {}).get("spec", {}).get("source", {}))
    .get("mapping", {})
    for example in EXAMPLES
]
MAPPINGS = [m for m in MAPPINGS if m] + [
    {},
    {"all": "$"},
    {"any": "$..*"},
    {"first": "$[0]", "deep": "$..k"},
    {"filtered": "$.items[?(@.v > 5)].v"},
    {"sorted": "$.items[/v]"},
    {"len": "$.items.`len`"},
    {"from_item": "$item.id"},
]


def check(mapping: dict[str, str], body: bytes) -> None:
    mapper = Mapper(mapping)
    try:
        attributes = mapper.apply(mapper.decode(body), {"id": "p-1"})
    except PayloadError as error:
        assert str(error).strip()
        return
    content_hash(attributes)
    for name, value in attributes.items():
        finite_json(value, name, max_depth=MAX_DEPTH)


def encode(document: object) -> bytes:
    return json.dumps(document, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


@given(st.sampled_from(MAPPINGS), json_values)
def test_any_json_document(mapping: dict[str, str], document: JSONValue) -> None:
    check(mapping, encode(document))


@given(st.sampled_from(MAPPINGS), json_values)
def test_any_json_document_wrapped_like_a_vendor(mapping: dict[str, str], value: JSONValue) -> None:
    check(
        mapping,
        encode({"data": {"power": value, "today": value, "online": value}, "items": [value]}),
    )


@given(st.sampled_from(MAPPINGS), st.binary(max_size=300))
def test_any_bytes(mapping: dict[str, str], body: bytes) -> None:
    check(mapping, body)


@given(
    st.sampled_from(MAPPINGS),
    st.integers(1, 3000),
    st.sampled_from(["1", "1e999", "NaN", '"\\ud800"', "9" * 5000, "-Infinity", "[]", "{}"]),
)
def test_deep_and_huge_numbers(mapping: dict[str, str], depth: int, leaf: str) -> None:
    nested = '{"k": [' * (depth // 2) + leaf + "]}" * (depth // 2)
    check(mapping, nested.encode())
    check(mapping, ('{"data": {"power": ' + nested + '}, "items": [' + nested + "]}").encode())
