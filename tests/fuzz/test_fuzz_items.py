"""Item values and inventory files, fuzzed: an item value never leaves its URL segment or
query value, never starts a header line, never names a file outside its Secret; any bytes
as an inventory file give JSON-clean items or a ManifestError naming the file."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from fuzzing import json_values
from hypothesis import given
from hypothesis import strategies as st

from fleetsync.api.v1alpha1 import Inventory
from fleetsync.api.v1alpha1._rules import finite_json, is_secret_key
from fleetsync.errors import ManifestError, PayloadError
from fleetsync.worker.inventory import iter_inventory
from fleetsync.worker.secrets import check_reference
from fleetsync.worker.template import expand_header, expand_url

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="./?#&=%:@[]\\\r\n\0 {}", max_size=20),
    st.sampled_from(["..", ".", "../../admin/users?all=1#", "%2e%2e", "//evil.test", "?a=1"]),
)


@given(hostile_text)
def test_an_item_value_stays_in_its_segment_and_its_query_value(value: str) -> None:
    try:
        url = expand_url("http://api.test/plants/{id}/realtime?x={id}&y=1", {"id": value})
    except PayloadError:
        assert value in (".", "..")
        return
    parts = urlsplit(url)
    assert parts.netloc == "api.test" and parts.fragment == ""
    segments = parts.path.split("/")
    assert len(segments) == 4 and segments[3] == "realtime"
    assert unquote(segments[2]) == value
    assert parse_qsl(parts.query, keep_blank_values=True) == [("x", value), ("y", "1")]


@given(hostile_text, json_values)
def test_a_header_value_never_breaks_its_line(value: str, other: object) -> None:
    try:
        header = expand_header("X-Plant", "id={id};o={other}", {"id": value, "other": other})
    except PayloadError as error:
        assert "X-Plant" in str(error)
        return
    assert not set(header) & {"\r", "\n", "\0"}


@given(hostile_text)
def test_a_secret_key_never_leaves_its_secret(key: str) -> None:
    root = Path("/run/secrets")
    try:
        check_reference("vendor-keys", key, field="f")
    except PayloadError:
        assert not is_secret_key(key)
        return
    resolved = (root / "vendor-keys" / key).resolve()
    assert resolved.parent == root / "vendor-keys"


async def _items(path: Path) -> list[dict[str, object]]:
    inventory = Inventory.model_validate({"file": {"path": str(path)}})
    return [i async for i in iter_inventory(inventory, key="id", base_dir=path.parent)]


@given(
    st.sampled_from(["f.csv", "f.json", "f.jsonl"]),
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(json_values, max_size=5).map(
            lambda items: json.dumps(items, allow_nan=True).encode()
        ),
    ),
)
def test_any_bytes_as_an_inventory_file(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(data)
        try:
            items = asyncio.run(_items(path))
        except ManifestError as error:
            assert all(where.startswith(str(path)) for where, _ in error.problems)
            return
    for item in items:
        assert isinstance(item, dict)
        finite_json(item, "item")
