"""Mapping vendor responses to attributes; malformed payloads fail with a readable reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from fleetsync.errors import PayloadError
from fleetsync.worker.mapping import Mapper, content_hash

MAPPING = {"power": "$.data.power", "online": "$.data.online"}


def test_maps_by_jsonpath() -> None:
    mapper = Mapper(MAPPING)
    body = b'{"data": {"power": 12.5, "online": true, "extra": 1}}'
    assert mapper.apply(mapper.decode(body)) == {"power": 12.5, "online": True}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid JSON at byte 1"),
        (b'{"data": null}', "mapping power: $.data.power matched nothing"),
        (b'{"data": {"online": true}}', "mapping power: $.data.power matched nothing"),
    ],
)
def test_malformed_payloads_fail_with_reason(body: bytes, reason: str) -> None:
    mapper = Mapper(MAPPING)
    with pytest.raises(PayloadError, match=reason.replace("$", r"\$")):
        mapper.apply(mapper.decode(body))


def test_content_hash_ignores_key_order_and_sees_value_changes() -> None:
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_item_fields_join_the_record_for_composite_keys() -> None:
    mapper = Mapper({"external_id": "$.data.id", "tdsp_duns": "$item.tdsp"})
    record = mapper.apply({"data": {"id": "c-1"}}, {"id": "c-1", "tdsp": "0071"})
    assert record == {"external_id": "c-1", "tdsp_duns": "0071"}
    with pytest.raises(PayloadError, match="no field 'tdsp'"):
        mapper.apply({"data": {"id": "c-1"}}, {"id": "c-1"})


_KEYS = st.sampled_from(["data", "power", "a", "b", "items", "0"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(document=_JSON, keys=st.lists(_KEYS.filter(str.isidentifier), min_size=1, max_size=3),
       brackets=st.booleans())  # fmt: skip
def test_plain_paths_agree_with_jsonpath_ng(
    document: object, keys: list[str], brackets: bool
) -> None:
    # Plain member paths skip jsonpath-ng per item; whatever the vendor sends, they must
    # match exactly what jsonpath-ng would (the same value, or nothing).
    path = "$" + "".join(f"['{k}']" if brackets else f".{k}" for k in keys)
    reference = parse_jsonpath(path).find(document)
    mapper = Mapper({"x": path})
    if reference:
        assert mapper.apply(document)["x"] == reference[0].value  # type: ignore[arg-type]
    else:
        with pytest.raises(PayloadError, match="matched nothing"):
            mapper.apply(document)  # type: ignore[arg-type]


_SCALARS = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.text(alphabet=st.characters(codec=None), max_size=6)  # lone surrogates too
)


@given(
    value=st.recursive(
        _SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=8,
    )
)
@settings(max_examples=500, deadline=None)
def test_the_scalar_shortcut_decides_as_the_full_walk(value: object) -> None:
    from fleetsync.api.v1alpha1._rules import finite_json
    from fleetsync.worker.mapping import MAX_DEPTH, _check_value

    def walk_refuses() -> bool:  # the check without its shortcut
        try:
            finite_json(value, "v", max_depth=MAX_DEPTH)
        except ValueError:
            return True
        stack = [value]
        while stack:
            node = stack.pop()
            if (
                isinstance(node, int)
                and not isinstance(node, bool)
                and not -(2**63) <= node < 2**63
            ):
                return True
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return False

    try:
        _check_value("v", value)  # type: ignore[arg-type]
        refused = False
    except PayloadError:
        refused = True
    assert refused == walk_refuses()
