"""Issue 14, items 2 and 8: inventories are untrusted. Bad bytes, NaN keys and pages from
other hosts fail the run with a ManifestError naming the file or field; caps hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetsync.api.v1alpha1 import Inventory, Source
from fleetsync.errors import ManifestError
from fleetsync.worker.inventory import iter_inventory
from fleetsync.worker.vendors import MAX_VENDOR_NAME, MAX_VENDORS, VendorCount


async def collect(
    inventory: Inventory, tmp_path: Path, client: httpx.AsyncClient | None = None
) -> list[dict[str, Any]]:
    return [
        item
        async for item in iter_inventory(
            inventory, key="id", base_dir=tmp_path, http_client=client, config_map_dir=tmp_path
        )
    ]


def file_inventory(path: str) -> Inventory:
    return Inventory.model_validate({"file": {"path": path}})


@pytest.mark.parametrize(
    ("name", "data", "offset"),
    [
        ("plants.csv", b"id,vendor\np-1,a\np-\xff2,b\n", 18),
        ("plants.json", b'[{"id": "p-1"}, {"id": "\xc3("}]', 24),
        ("plants.jsonl", b'{"id": "p-1"}\n{"id": "\xe2\x82"}\n', 22),
    ],
)
async def test_a_file_that_is_not_utf8_names_the_file_and_the_byte_offset(
    tmp_path: Path, name: str, data: bytes, offset: int
) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ManifestError) as caught:
        await collect(file_inventory(name), tmp_path)
    where, reason = caught.value.problems[0]
    assert where == str(tmp_path / name)
    assert reason == f"is not UTF-8: byte offset {offset}"
    assert data[offset : offset + 1] in (b"\xff", b"\xc3", b"\xe2")


async def test_a_config_map_that_is_not_utf8_is_named_too(tmp_path: Path) -> None:
    (tmp_path / "plants.csv").write_bytes(b"id\n\x80\n")
    inventory = Inventory.model_validate({"configMapRef": {"name": "p", "key": "plants.csv"}})
    with pytest.raises(ManifestError, match=r"plants\.csv: is not UTF-8: byte offset 3"):
        await collect(inventory, tmp_path)


async def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    (tmp_path / "plants.csv").write_bytes(b"\xef\xbb\xbfid,vendor\np-1,a\n")
    assert await collect(file_inventory("plants.csv"), tmp_path) == [{"id": "p-1", "vendor": "a"}]


@pytest.mark.parametrize(
    "document",
    ['[{"id": NaN}]', '[{"id": Infinity}]', '[{"id": -Infinity}]', '[{"id": 1e999}]'],
)
async def test_nan_and_infinity_keys_are_refused(tmp_path: Path, document: str) -> None:
    (tmp_path / "plants.json").write_text(document)
    with pytest.raises(ManifestError, match="refused") as caught:
        await collect(file_inventory("plants.json"), tmp_path)
    assert caught.value.problems[0][0] == str(tmp_path / "plants.json")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_keys_in_an_inline_inventory_are_refused(value: float) -> None:
    from fleetsync.api.manifest import parse_manifest

    with pytest.raises(ManifestError) as caught:
        parse_manifest(
            {
                "apiVersion": "fleetsync.dev/v1alpha1",
                "kind": "SyncJob",
                "metadata": {"name": "x"},
                "spec": {
                    "fleet": {"inventory": {"inline": [{"id": "a"}, {"id": value}]}},
                    "source": {"http": {"url": "http://h/{id}"}},
                },
            }
        )
    assert caught.value.problems == [
        (
            "spec.fleet.inventory.inline[1].id",
            f"{value!r} is not a JSON number (NaN and Infinity are refused)",
        )
    ]


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("a.json", "[1, 2]", "[0]"),
        ("b.json", '{"items": [{"id": 1}, "x"]}', "[1]"),
        ("c.jsonl", '{"id": 1}\n[]\n', "[1]"),
        ("d.json", "[" * 50_000 + "]" * 50_000, ""),
        ("e.json", "[{" + '"id": ' + "9" * 5000 + "}]", ""),
        ("f.json", "{not json", ""),
    ],
)
async def test_malformed_json_files_fail_with_a_manifest_error(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError) as caught:
        await collect(file_inventory(name), tmp_path)
    assert caught.value.problems[0][0].startswith(str(tmp_path / name))
    assert caught.value.problems[0][0].endswith(where)


async def test_a_csv_field_over_the_csv_limit_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("id\n" + "x" * 200_000 + "\n")
    with pytest.raises(ManifestError, match="is not CSV"):
        await collect(file_inventory("big.csv"), tmp_path)


# --- HTTP inventory --------------------------------------------------------------------------


class Pages:
    """An in-memory listing: each path answers its JSON page; every request is recorded."""

    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages = pages
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        key = f"{request.url.host}{request.url.raw_path.decode()}"
        page = self.pages.get(key)
        return httpx.Response(404) if page is None else httpx.Response(200, json=page)


def http_inventory(**spec: Any) -> Inventory:
    return Inventory.model_validate({"http": {"url": "http://list.test/p1", **spec}})


async def test_a_next_page_on_another_host_is_refused_unfetched(tmp_path: Path) -> None:
    pages = Pages(
        {
            "list.test/p1": {"items": [{"id": "a"}], "next": "http://evil.test/p2"},
            "evil.test/p2": {"items": [{"id": "evil"}]},
        }
    )
    inventory = http_inventory(headers={"Authorization": "Bearer inventory-token"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(pages)) as client:
        with pytest.raises(ManifestError) as caught:
            await collect(inventory, tmp_path, client)
    assert caught.value.problems[0][0] == "spec.fleet.inventory.http.allowedHosts"
    assert "evil.test" in caught.value.problems[0][1]
    assert [r.url.host for r in pages.seen] == ["list.test"]


@pytest.mark.parametrize(
    "nxt",
    [
        "//evil.test/p2",
        "javascript:alert(1)",
        "http://list.test.evil.test/p2",
        "http://u@evil.test/",
    ],
)
async def test_relative_and_odd_next_links_are_checked_too(tmp_path: Path, nxt: str) -> None:
    pages = Pages({"list.test/p1": {"items": [], "next": nxt}})
    async with httpx.AsyncClient(transport=httpx.MockTransport(pages)) as client:
        with pytest.raises(ManifestError, match="allowedHosts"):
            await collect(http_inventory(), tmp_path, client)
    assert len(pages.seen) == 1


async def test_allowed_hosts_admit_a_second_host(tmp_path: Path) -> None:
    pages = Pages(
        {
            "list.test/p1": {"items": [{"id": "a"}], "next": "http://cdn.test/p2"},
            "cdn.test/p2": {"items": [{"id": "b"}], "next": None},
        }
    )
    inventory = http_inventory(allowedHosts=["list.test", "cdn.test"])
    async with httpx.AsyncClient(transport=httpx.MockTransport(pages)) as client:
        assert await collect(inventory, tmp_path, client) == [{"id": "a"}, {"id": "b"}]


def endless(request: httpx.Request) -> httpx.Response:
    n = int(request.url.path.strip("/p") or 1)
    items = [{"id": f"{n}-{i}"} for i in range(10)]
    return httpx.Response(200, json={"items": items, "next": f"/p{n + 1}"})


@pytest.mark.parametrize(
    ("spec", "field"),
    [({"maxPages": 3}, "maxPages"), ({"maxItems": 25}, "maxItems"), ({"maxPageBytes": 1024}, "")],
)
async def test_pages_items_and_page_bytes_are_capped(
    tmp_path: Path, spec: dict[str, int], field: str
) -> None:
    def big_pages(request: httpx.Request) -> httpx.Response:
        if "maxPageBytes" in spec:
            return httpx.Response(200, json={"items": [{"id": "x" * 2000}]})
        return endless(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(big_pages)) as client:
        with pytest.raises(ManifestError) as caught:
            await collect(http_inventory(**spec), tmp_path, client)
    assert caught.value.problems[0][0] == f"spec.fleet.inventory.http.{field or 'maxPageBytes'}"


async def test_a_page_with_nan_is_a_manifest_error(tmp_path: Path) -> None:
    def nan_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"items": [{"id": NaN}]}')

    async with httpx.AsyncClient(transport=httpx.MockTransport(nan_page)) as client:
        with pytest.raises(ManifestError, match="NaN"):
            await collect(http_inventory(), tmp_path, client)


def test_http_inventory_defaults_are_documented_bounds() -> None:
    spec = http_inventory().http
    assert spec is not None
    assert (spec.max_pages, spec.max_page_bytes, spec.max_items) == (10_000, 8 << 20, 1_000_000)
    assert spec.allowed_hosts is None


# --- 9 (part): distinct vendors --------------------------------------------------------------


def test_more_distinct_vendors_than_the_bound_fail_the_run_naming_vendors_by() -> None:
    source = Source.model_validate({"http": {"url": "http://h/{id}"}, "vendors": {"by": "id"}})
    count = VendorCount(source)
    for i in range(MAX_VENDORS):
        count.observe({"id": f"v{i}"})
        count.observe({"id": f"v{i}"})  # repeats are free
    with pytest.raises(ManifestError) as caught:
        count.observe({"id": "one-too-many"})
    assert caught.value.problems[0][0] == "spec.source.vendors.by"
    assert len(count) == MAX_VENDORS == 256


def test_a_vendor_name_longer_than_a_dns_name_fails_the_run_naming_vendors_by() -> None:
    source = Source.model_validate({"http": {"url": "http://h/{id}"}, "vendors": {"by": "id"}})
    count = VendorCount(source)
    count.observe({"id": "v" * MAX_VENDOR_NAME})
    with pytest.raises(ManifestError) as caught:
        count.observe({"id": "v" * (MAX_VENDOR_NAME + 1)})
    field, reason = caught.value.problems[0]
    assert field == "spec.source.vendors.by" and "254 characters" in reason


def test_declared_vendors_are_bounded_by_the_schema() -> None:
    items = {f"v{i}": {} for i in range(MAX_VENDORS + 1)}
    with pytest.raises(ValueError, match="at most 256"):
        Source.model_validate({"http": {"url": "http://h"}, "vendors": {"items": items}})
