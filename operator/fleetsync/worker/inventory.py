"""Where a fleet's items come from, streamed so 100k items never sit in memory at once,
and which shard each item belongs to (a stable hash of its key).

Sources: ``inline``, ``file`` (JSON list, JSON ``{"items": [...]}``, JSON Lines or CSV),
``configMapRef`` (in a pod the ConfigMap is mounted and read as a file), paginated ``http``,
and ``generate``. JSON lists are parsed whole (the standard library has no streaming JSON
parser); use CSV or JSON Lines for very large files.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from urllib.parse import urljoin

import httpx
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import JsonValue

from fleetsync.api.v1alpha1.syncjob import FileInventory, HttpInventory, Inventory
from fleetsync.errors import ManifestError, VendorError
from fleetsync.worker.template import expand_generated

__all__ = ["Item", "iter_inventory", "shard_of"]

Item = dict[str, JsonValue]


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _file_items(path: Path, fmt: str) -> Iterator[Item]:
    if fmt == "auto":
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(path.suffix, "json")
    with path.open(encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            for row in csv.DictReader(handle):
                yield dict(row)
        elif fmt == "jsonl":
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        else:
            document = json.load(handle)
            items = document.get("items") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise ManifestError([(str(path), "must hold a JSON list or {items: [...]}")])
            yield from items


def _generated(
    count: int, id_template: str, key: str, template: Mapping[str, str]
) -> Iterator[Item]:
    for i in range(count):
        item: Item = {key: expand_generated(id_template, i)}
        for field, text in template.items():
            item[field] = expand_generated(text, i)
        yield item


async def _http_items(spec: HttpInventory, client: httpx.AsyncClient) -> AsyncIterator[Item]:
    items_path = parse_jsonpath(spec.items_path)
    next_path = parse_jsonpath(spec.next_page_path) if spec.next_page_path else None
    url: str | None = spec.url
    for _ in range(spec.max_pages):
        if url is None:
            return
        try:
            response = await client.get(url, headers=spec.headers)
            response.raise_for_status()
            page = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise VendorError(f"inventory page {url} failed: {error}") from None
        for match in items_path.find(page):
            values = match.value if isinstance(match.value, list) else [match.value]
            for item in values:
                yield item
        next_matches = next_path.find(page) if next_path else []
        nxt = next_matches[0].value if next_matches else None
        url = urljoin(url, nxt) if isinstance(nxt, str) and nxt else None
    raise VendorError(f"inventory has more than maxPages={spec.max_pages} pages")


async def iter_inventory(
    inventory: Inventory,
    *,
    key: str,
    base_dir: Path,
    http_client: httpx.AsyncClient | None = None,
    config_map_dir: Path | None = None,
) -> AsyncIterator[Item]:
    """Every item of the fleet, in a stable order (the checkpoint relies on it)."""
    if inventory.inline is not None:
        for item in inventory.inline:
            yield item
    elif inventory.file is not None:
        for item in _file_items(_resolve(inventory.file, base_dir), inventory.file.format):
            yield item
    elif inventory.config_map_ref is not None:
        ref = inventory.config_map_ref
        if config_map_dir is None:
            raise ManifestError(
                [("spec.fleet.inventory.configMapRef", "needs a cluster; locally use file:")]
            )
        for item in _file_items(config_map_dir / ref.key, "auto"):
            yield item
    elif inventory.generate is not None:
        gen = inventory.generate
        for item in _generated(gen.count, gen.id_template, key, gen.template):
            yield item
    elif inventory.http is not None:
        if http_client is None:
            raise ManifestError([("spec.fleet.inventory.http", "no HTTP client available")])
        async for item in _http_items(inventory.http, http_client):
            yield item


def _resolve(spec: FileInventory, base_dir: Path) -> Path:
    path = Path(spec.path)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ManifestError([("spec.fleet.inventory.file.path", f"{path} does not exist")])
    return path
