"""What each executed documentation block says it does, checked against what it did.

Every figure is read from the documentation itself (a command's trailing comment, or the
examples table), so a wrong count fails here. A documented fleet size is checked twice:
against the manifest as shipped (the keys its generator makes), and — runs use fleets
scaled by ``test_docs.FLEET_SCALE`` — against the store after the run, by the keys the
scaled manifest makes.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from doc_blocks import table_rows
from doc_runner import ROOT, BlockRun, Result

from fleetsync.worker.template import expand_generated

EXAMPLES_README = ROOT / "examples" / "README.md"


def number(text: str) -> int:
    return int(text.replace(",", ""))


def find(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    assert found, f"the documentation no longer says {pattern!r}: {text!r}"
    return found


def matching(run: BlockRun, needle: str, *, without: str | None = None) -> list[Result]:
    return [
        r
        for r in run.results
        if needle in r.command.text and (without is None or without not in r.command.text)
    ]


def summary(result: Result) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"{result.command.text}: printed nothing"
    found: dict[str, Any] = json.loads(lines[-1])
    return found


def generated_keys(manifest: Path) -> list[str]:
    """The fleet's keys, in order, as the manifest's generator makes them."""
    body = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    spec = body["spec"]["jobTemplate"]["spec"] if body["kind"] == "SyncSchedule" else body["spec"]
    generate = spec["fleet"]["inventory"]["generate"]
    return [expand_generated(generate["idTemplate"], i) for i in range(generate["count"])]


def fleet(documented: str, *manifests: str, scratch: Path) -> int:
    """The documented number of distinct keys must be what the shipped manifests make; the
    run's store must then hold what the scaled copies make: that number is returned."""
    shipped = {k for m in manifests for k in generated_keys(ROOT / m)}
    assert number(documented) == len(shipped), (manifests, documented, len(shipped))
    return len({k for m in manifests for k in generated_keys(scratch / m)})


def sqlite_count(path: Path, table: str) -> int:
    assert path.is_file(), f"{path} was not written"
    with sqlite3.connect(path) as connection:
        (rows,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(rows)


def pg_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def check_demo(run: BlockRun, dsn: str) -> None:
    result = run.results[0]
    found = find(r"syncs ([\d,]+) plants into (\S+)", result.command.comment)
    rows = sqlite_count(run.scratch / found[2], "plants")
    assert rows == number(found[1]), f"the README says {found[1]} plants, {found[2]} has {rows}"
    assert f"now holds {rows} plants" in result.stdout, result.stdout


def check_first_run(run: BlockRun, dsn: str) -> None:
    manifest = "examples/plants/syncjob.yaml"
    first, again = matching(run, f"fleetsync run {manifest}")
    found = find(r"([\d,]+) plants into (\S+)", first.command.comment)
    size = fleet(found[1], manifest, scratch=run.scratch)
    assert sqlite_count(run.scratch / found[2], "plants") == size
    items = summary(again)["items"]
    assert items["synced"] == number(find(r"(\d+) written", again.command.comment)[1])
    assert items["unchanged"] == size


def check_dynamodb_postgres(run: BlockRun, dsn: str) -> None:
    manifest = "examples/plants/syncjob-dynamodb.yaml"
    first, again = matching(run, manifest)
    found = find(r"([\d,]+) items in table (\S+)", first.command.comment)
    size = fleet(found[1], manifest, scratch=run.scratch)
    assert summary(first)["items"]["synced"] == size
    scratch_manifest = (run.scratch / manifest).read_text(encoding="utf-8")
    assert f"table: {found[2]}" in scratch_manifest
    # moto is gone with the block; the second run read every item back from it.
    written = number(find(r"(\d+) written", again.command.comment)[1])
    assert summary(again)["items"]["synced"] == written
    assert summary(again)["items"]["unchanged"] == size
    (hourly,) = matching(run, "examples/cities/hourly.yaml")
    found = find(r"([\d,]+) rows in (\w+)", hourly.command.comment)
    size = fleet(found[1], "examples/cities/hourly.yaml", scratch=run.scratch)
    assert pg_count(dsn, found[2]) == size


def check_five_minutes(run: BlockRun, dsn: str) -> None:
    valid, broken = matching(run, "fleetsync validate")
    assert valid.stdout.strip() == find(r"prints: (.+)", valid.command.comment)[1]
    assert find(r"exit 64: (.+)", broken.command.comment)[1] in broken.stderr
    (mine,) = matching(run, "fleetsync run my-plants.yaml")
    found = find(r"([\d,]+) plants into (\S+), next to (\S+)", mine.command.comment)
    size = fleet(found[1], "examples/plants/syncjob.yaml", scratch=run.scratch)
    assert summary(mine)["items"]["synced"] == size
    db = (run.scratch / found[3]).parent / found[2]
    assert sqlite_count(db, "plants") == size


def _store_count(run: BlockRun, dsn: str, where: str) -> int:
    if "PostgreSQL" in where:
        return pg_count(dsn, find(r"PostgreSQL table `(\w+)`", where)[1])
    found = find(r"`(examples/\S+\.db)`, table `(\w+)`", where)
    return sqlite_count(run.scratch / found[1], found[2])


def check_examples(run: BlockRun, dsn: str) -> None:
    checked = 0
    for cells in table_rows(EXAMPLES_README, "manifest"):
        manifests = [f"examples/{m}" for m in re.findall(r"`([\w/.-]+\.yaml)`", cells[0])]
        runs = {m: matching(run, f"fleetsync run {m}") for m in manifests}
        if not all(runs.values()):
            continue  # run by another block (test_every_table_row_is_run says which)
        found = find(r"^([\d,]+(?: \+ [\d,]+)*)(?: = ([\d,]+))? (rows|items)", cells[1])
        parts = found[1].split(" + ")
        for part, manifest in zip(parts, manifests, strict=True):
            fleet(part, manifest, scratch=run.scratch)
        size = fleet(found[2] or found[1], *manifests, scratch=run.scratch)
        assert _store_count(run, dsn, cells[1]) == size, cells
        second = number(find(r"^([\d,]+)", cells[2])[1])
        for manifest, results in runs.items():
            assert len(results) == 2, f"{manifest}: the block runs it {len(results)} times"
            assert summary(results[0])["phase"] == "Succeeded", run.describe(0)
            assert summary(results[1])["items"]["synced"] == second, (manifest, cells[2])
        checked += 1
    assert checked, "no row of the examples table was run by this block"


def check_dead_letters(run: BlockRun, dsn: str) -> None:
    manifest = "examples/measurements/syncjob.yaml"
    (cells,) = [c for c in table_rows(EXAMPLES_README, "manifest") if "measurements/" in c[0]]
    first, second = matching(run, f"fleetsync run {manifest}")
    found = find(r"([\d,]+) of ([\d,]+) failed", first.command.comment)
    items = summary(first)["items"]
    assert (items["failed"], items["total"]) == (number(found[1]), number(found[2]))
    assert number(found[2]) == len(generated_keys(ROOT / manifest))
    table_failed = find(r"([\d,]+) measurements of ([\d,]+) users fail", cells[1])
    assert number(table_failed[1]) == number(found[1])
    assert _store_count(run, dsn, cells[1]) == number(find(r"^([\d,]+) rows", cells[1])[1])
    (listing,) = matching(run, f"fleetsync dead-letters {manifest}", without="--run")
    letters = [json.loads(line) for line in listing.stdout.splitlines()]
    assert len(letters) == number(find(r"([\d,]+) JSON lines", listing.command.comment)[1])
    assert len(letters) == number(find(r"([\d,]+) dead letters", cells[1])[1])
    assert all(set(letter) == {"key", "attempts", "cause", "reason"} for letter in letters)
    items = summary(second)["items"]
    assert items["synced"] == number(find(r"^([\d,]+) writes", cells[2])[1])
    assert items["stale"] == number(find(r"([\d,]+) older measurements stale", cells[2])[1])
    assert items["unchanged"] == number(find(r"([\d,]+) unchanged", cells[2])[1])
    assert items["failed"] == number(find(r"same ([\d,]+) fail", second.command.comment)[1])
    (retry,) = matching(run, f"fleetsync retry-failed {manifest}")
    recovered = find(r"(\d+ of \d+ dead letters) recovered", retry.command.comment)[1]
    assert recovered in " ".join(retry.stdout.split())
    (unknown,) = matching(run, "--run nosuch")
    assert "nosuch" in unknown.stderr


CHECKS: dict[str, Callable[[BlockRun, str], None]] = {
    "demo": check_demo,
    "first-run": check_first_run,
    "dynamodb-postgres": check_dynamodb_postgres,
    "five-minutes": check_five_minutes,
    "examples": check_examples,
    "dead-letters": check_dead_letters,
}
