"""Templates, generated inventories and shard membership."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.api.v1alpha1.syncjob import Inventory
from fleetsync.errors import ManifestError, PayloadError
from fleetsync.worker.inventory import first_items, iter_inventory, shard_of
from fleetsync.worker.requests import template_problems
from fleetsync.worker.template import VendorName, expand, expand_generated


def test_vendor_template_reads_name_and_base_url() -> None:
    vendor = VendorName("sungrow", "http://127.0.0.1:9/vendors/sungrow/")
    url = expand(
        "{vendor.baseUrl}/plants/{id}/realtime?v={vendor}", {"id": "p-1", "vendor": vendor}
    )
    assert url == "http://127.0.0.1:9/vendors/sungrow/plants/p-1/realtime?v=sungrow"


def test_missing_template_field_fails_the_item_with_its_name() -> None:
    with pytest.raises(PayloadError, match=r"\{plant_id\}"):
        expand("/plants/{plant_id}", {"id": "p-1"})


@pytest.mark.parametrize(
    ("template", "i", "expected"),
    [
        ("p-{i}", 7, "p-7"), ("vendor-{i%3}", 7, "vendor-1"), ("{i//10}", 57, "5"),
        ("{i+1}", 0, "1"), ("{i%[sungrow, huawei,solaredge]}", 7, "huawei"),
        ("{i%[sungrow,huawei,solaredge]}-{i%3}", 5, "solaredge-2"), ("{i%[only]}", 9, "only"),
    ],
)  # fmt: skip
def test_generator_expressions(template: str, i: int, expected: str) -> None:
    assert expand_generated(template, i) == expected


def test_a_choice_of_no_names_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to choose"):
        expand_generated("{i%[ , ]}", 1)


def test_shards_are_stable_and_balanced() -> None:
    keys = [f"device-{i}" for i in range(40_000)]
    counts = Counter(shard_of(k, 8) for k in keys)
    assert set(counts) == set(range(8))
    assert max(counts.values()) / min(counts.values()) < 1.1
    assert shard_of("device-17", 8) == shard_of("device-17", 8)


async def collect(inventory: Inventory, tmp_path: Path) -> list[dict[str, object]]:
    return [item async for item in iter_inventory(inventory, key="id", base_dir=tmp_path)]


async def test_generated_inventory(tmp_path: Path) -> None:
    inventory = Inventory.model_validate(
        {"generate": {"count": 4, "idTemplate": "p-{i}", "template": {"vendor": "v{i%2}"}}}
    )
    assert await collect(inventory, tmp_path) == [
        {"id": "p-0", "vendor": "v0"},
        {"id": "p-1", "vendor": "v1"},
        {"id": "p-2", "vendor": "v0"},
        {"id": "p-3", "vendor": "v1"},
    ]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("plants.csv", "id,vendor\np-1,a\np-2,b\n"),
        ("plants.json", '[{"id": "p-1", "vendor": "a"}, {"id": "p-2", "vendor": "b"}]'),
        ("plants.jsonl", '{"id": "p-1", "vendor": "a"}\n{"id": "p-2", "vendor": "b"}\n'),
        ("wrapped.json", '{"items": [{"id": "p-1", "vendor": "a"}, {"id": "p-2", "vendor": "b"}]}'),
    ],
)
async def test_file_inventories(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    inventory = Inventory.model_validate({"file": {"path": name}})
    assert await collect(inventory, tmp_path) == [
        {"id": "p-1", "vendor": "a"},
        {"id": "p-2", "vendor": "b"},
    ]


async def test_missing_file_names_the_field(tmp_path: Path) -> None:
    inventory = Inventory.model_validate({"file": {"path": "nope.csv"}})
    with pytest.raises(ManifestError) as caught:
        await collect(inventory, tmp_path)
    assert caught.value.problems[0][0] == "spec.fleet.inventory.file.path"


# --- issue 13, item 5: templates naming a field no item has ----------------------------------


def spec_with(source: dict[str, object], sink: dict[str, object] | None = None) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"inline": [{"id": "p-1", "vendor": "a"}]}},
            "source": source,
            **({"sink": sink} if sink else {}),
        }
    )


def test_a_template_naming_an_absent_field_is_found_with_its_path() -> None:
    spec = spec_with(
        {
            "http": {
                "url": "{vendor.baseUrl}/plants/{plant_id}?v={vendor}",
                "headers": {"X-Site": "{site}", "X-Id": "{id}"},
                "auth": {"secretRef": {"name": "keys", "key": "{acount}"}},
            }
        },
        {"dynamodb": {"table": "plants", "key": {"PK": "PLANT#{id}", "SK": "{key}#{sk}"}}},
    )
    items = [{"id": "p-1", "vendor": "a"}, {"id": "p-2", "vendor": "b", "site": "s"}]
    assert template_problems(spec, items) == [
        ("spec.source.http.url", "names {plant_id}, which none of the first 2 items has"),
        (
            "spec.source.http.auth.secretRef.key",
            "names {acount}, which none of the first 2 items has",
        ),
        ("spec.sink.dynamodb.key.SK", "names {sk}, which none of the first 2 items has"),
    ]
    assert template_problems(spec, []) == []


async def test_first_items_stops_early(tmp_path: Path) -> None:
    inventory = Inventory.model_validate({"generate": {"count": 10_000_000}})
    items = await first_items(inventory, key="id", base_dir=tmp_path, count=3)
    assert [item["id"] for item in items] == ["item-0", "item-1", "item-2"]
