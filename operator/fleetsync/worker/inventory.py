"""Where a fleet's items come from, streamed so 100k items never sit in memory at once,
and which shard each item belongs to (a stable hash of its key).

Sources: ``inline``, ``file`` (JSON list, JSON ``{"items": [...]}``, JSON Lines or CSV),
``configMapRef`` (in a pod the ConfigMap is mounted and read as a file), paginated ``http``,
and ``generate``. JSON lists are parsed whole (the standard library has no streaming JSON
parser); use CSV or JSON Lines for very large files.

Inventories are untrusted input, and a bad one fails the whole run with a
:class:`~fleetsync.errors.ManifestError` (exit 64) naming the file or field, never a crash
that the Job retries: bytes that are not UTF-8 (with their offset), JSON that does not parse,
NaN or Infinity anywhere (they have no JSON spelling and would become the keys "nan"/"inf"),
items that are not objects. The HTTP inventory fetches every page only from ``allowedHosts``
(default: the first page's host), so its headers never reach another host, and caps pages,
page bytes (after decompression) and items.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast
from urllib.parse import urljoin, urlsplit

from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import JsonValue

from fleetsync.api.v1alpha1._rules import loads_finite
from fleetsync.api.v1alpha1.syncjob import FileInventory, HttpInventory, Inventory
from fleetsync.errors import ManifestError, PayloadError, VendorError
from fleetsync.worker.fetch import AllowedHosts, BodyTooLarge, send_bounded
from fleetsync.worker.template import expand_generated

if TYPE_CHECKING:  # httpx is imported by the HTTP inventory alone (see worker/fetch.py)
    import httpx

# An HTTP inventory's client, or what makes it on first use (only an HTTP inventory asks).
ClientSource: TypeAlias = "httpx.AsyncClient | Callable[[], httpx.AsyncClient]"

__all__ = ["Item", "first_items", "iter_inventory", "parse_json", "shard_of"]

Item = dict[str, JsonValue]
_HTTP = "spec.fleet.inventory.http"


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _utf8_lines(handle: Iterable[bytes], where: str) -> Iterator[str]:
    """Decoded lines (endings kept, a leading BOM dropped); ManifestError at the first byte
    that is not UTF-8, naming its offset. UTF-8 never uses the byte 0x0A inside a character,
    so decoding line by line is exact."""
    offset = 0
    for number, raw in enumerate(handle):
        try:
            line = raw.decode("utf-8-sig" if number == 0 else "utf-8")
        except UnicodeDecodeError as error:
            bad = offset + error.start
            raise ManifestError([(where, f"is not UTF-8: byte offset {bad}")]) from None
        offset += len(raw)
        yield line


def parse_json(text: str | bytes, where: str) -> JsonValue:
    """Strict JSON (no NaN/Infinity, bounded nesting); ManifestError naming ``where``."""
    try:
        value = cast(JsonValue, loads_finite(text))
    except json.JSONDecodeError as error:
        raise ManifestError([(where, f"is not JSON: {error.msg} at line {error.lineno}")]) from None
    except UnicodeDecodeError as error:
        raise ManifestError([(where, f"is not UTF-8: byte offset {error.start}")]) from None
    except RecursionError:
        raise ManifestError([(where, "nests too deeply")]) from None
    except ValueError as error:  # NaN/Infinity, overflowing floats, the int digits limit
        raise ManifestError([(where, str(error))]) from None
    return value


def _objects(values: Iterable[JsonValue], where: str, start: int = 0) -> Iterator[Item]:
    for index, value in enumerate(values, start):
        if not isinstance(value, dict):
            raise ManifestError([(f"{where}[{index}]", "an item must be a JSON object")])
        yield value


def _csv_items(lines: Iterator[str], where: str) -> Iterator[Item]:
    reader = csv.DictReader(lines)
    try:
        for row in reader:
            yield {str(k): v for k, v in row.items()}
    except csv.Error as error:
        raise ManifestError([(f"{where}:{reader.line_num}", f"is not CSV: {error}")]) from None


def _file_items(path: Path, fmt: str) -> Iterator[Item]:
    if fmt == "auto":
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(path.suffix, "json")
    where = str(path)
    with path.open("rb") as handle:
        lines = _utf8_lines(handle, where)
        if fmt == "csv":
            yield from _csv_items(lines, where)
        elif fmt == "jsonl":
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield from _objects([parse_json(line, f"{where}:{number}")], where, number - 1)
        else:
            document = parse_json("".join(lines), where)
            items = document.get("items") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise ManifestError([(where, "must hold a JSON list or {items: [...]}")])
            yield from _objects(items, where)


def _generated(
    count: int, id_template: str, key: str, template: Mapping[str, str]
) -> Iterator[Item]:
    for i in range(count):
        item: Item = {key: expand_generated(id_template, i)}
        for field, text in template.items():
            item[field] = expand_generated(text, i)
        yield item


def _inventory_hosts(spec: HttpInventory) -> AllowedHosts:
    if spec.allowed_hosts is not None:
        return AllowedHosts(spec.allowed_hosts)
    host = AllowedHosts.host_of(spec.url)
    if host is None:
        raise ManifestError([(f"{_HTTP}.url", "has no host")])
    return AllowedHosts([host])


async def _page(spec: HttpInventory, client: httpx.AsyncClient, url: str, number: int) -> JsonValue:
    """Page ``number`` (1-based) as JSON, fetched within the spec's deadline and byte cap."""
    import httpx

    try:
        request = client.build_request("GET", url, headers=spec.headers)
        response, body = await send_bounded(
            client, request, limit=spec.max_page_bytes, seconds=spec.timeout_seconds
        )
    except BodyTooLarge:
        reason = f"page {number} is larger than {spec.max_page_bytes} bytes"
        raise ManifestError([(f"{_HTTP}.maxPageBytes", reason)]) from None
    except (PayloadError, httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise ManifestError([(f"{_HTTP}.url", f"page {number}: {error}")]) from None
    except VendorError as error:
        raise VendorError(f"inventory page {number} failed: {error}", status=error.status) from None
    if not response.is_success:
        raise VendorError(
            f"inventory page {number} answered HTTP {response.status_code}",
            status=response.status_code,
        )
    return parse_json(body, f"{_HTTP}: page {number}")


async def _http_items(spec: HttpInventory, client: httpx.AsyncClient) -> AsyncIterator[Item]:
    allowed = _inventory_hosts(spec)
    items_path = parse_jsonpath(spec.items_path)
    next_path = parse_jsonpath(spec.next_page_path) if spec.next_page_path else None
    url: str | None = spec.url
    count = 0
    for number in range(1, spec.max_pages + 1):
        if url is None:
            return
        if url not in allowed:
            host = urlsplit(url).netloc[:100] or "(none)"
            reason = f"page {number} is on host {host}, not in allowedHosts; not fetched"
            raise ManifestError([(f"{_HTTP}.allowedHosts", reason)])
        page = await _page(spec, client, url, number)
        for match in items_path.find(page):
            values = match.value if isinstance(match.value, list) else [match.value]
            for item in _objects(values, f"{_HTTP}: page {number}"):
                count += 1
                if count > spec.max_items:
                    reason = f"the inventory has more than {spec.max_items} items"
                    raise ManifestError([(f"{_HTTP}.maxItems", reason)])
                yield item
        next_matches = next_path.find(page) if next_path else []
        nxt = next_matches[0].value if next_matches else None
        url = urljoin(url, nxt) if isinstance(nxt, str) and nxt else None
    if url is not None:
        reason = f"the inventory has more than {spec.max_pages} pages"
        raise ManifestError([(f"{_HTTP}.maxPages", reason)])


async def iter_inventory(
    inventory: Inventory,
    *,
    key: str,
    base_dir: Path,
    http_client: ClientSource | None = None,
    config_map_dir: Path | None = None,
) -> AsyncGenerator[Item, None]:
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
        for item in _file_items(_config_map_file(config_map_dir, ref.key), "auto"):
            yield item
    elif inventory.generate is not None:
        gen = inventory.generate
        for item in _generated(gen.count, gen.id_template, key, gen.template):
            yield item
    elif inventory.http is not None:
        if http_client is None:
            raise ManifestError([("spec.fleet.inventory.http", "no HTTP client available")])
        import httpx

        client = http_client if isinstance(http_client, httpx.AsyncClient) else http_client()
        async for item in _http_items(inventory.http, client):
            yield item


def _resolve(spec: FileInventory, base_dir: Path) -> Path:
    path = Path(spec.path)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ManifestError([("spec.fleet.inventory.file.path", f"{path} does not exist")])
    return path


def _config_map_file(directory: Path, key: str) -> Path:
    # A ConfigMap key is [-._a-zA-Z0-9]+ (the API server enforces it); refuse anything that
    # would leave the mounted directory all the same.
    if "/" in key or key in (".", ".."):
        raise ManifestError([("spec.fleet.inventory.configMapRef.key", "is not a key name")])
    path = directory / key
    if not path.is_file():
        reason = f"ConfigMap key {key} is not mounted at {directory}"
        raise ManifestError([("spec.fleet.inventory.configMapRef.key", reason)])
    return path


async def first_items(
    inventory: Inventory,
    *,
    key: str,
    base_dir: Path,
    count: int = 20,
    http_client: ClientSource | None = None,
    config_map_dir: Path | None = None,
) -> list[Item]:
    """The inventory's first ``count`` items (an HTTP inventory: from its first page)."""
    items: list[Item] = []
    stream = iter_inventory(
        inventory,
        key=key,
        base_dir=base_dir,
        http_client=http_client,
        config_map_dir=config_map_dir,
    )
    async with contextlib.aclosing(stream):
        async for item in stream:
            items.append(item)
            if len(items) >= count:
                break
    return items
