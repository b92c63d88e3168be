"""Every shell block of README.md, docs/README.md and examples/README.md runs as written.

Each block is either run here — in document order, in one scratch directory per document
holding the examples, the Makefile and ``.venv`` (a reader following it at a terminal),
with the virtualenv's ``bin`` first on PATH, against the servers the block itself starts
(the simulator, moto; a block that does not stop them leaves the next one a taken port)
and the test PostgreSQL — and what it says it does is
checked (``doc_checks.py``), or it is marked ``cluster`` (covered by the e2e suite) or
``ci`` (CI's own ``make`` targets). An unmarked block fails. A renamed flag fails (the
command's exit code), and so does a wrong figure.

Two substitutions, both in the tables below: documented placeholders (the ports the
examples use, which another process on this machine may hold; the DSN), and fleet sizes
scaled down so the suite runs in about two minutes (the documented sizes are still checked
against the shipped manifests).
"""

from __future__ import annotations

import itertools
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from doc_blocks import SHELL_LANGUAGES, Block, blocks_of, table_rows
from doc_checks import CHECKS, EXAMPLES_README
from doc_runner import ROOT, make_scratch, run_block, scratch_env

pytestmark = pytest.mark.integration

DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "README.md", EXAMPLES_README]

# documented placeholder -> what the test substitutes ({sim}, {moto}: free ports; {dsn}: a
# fresh database on the test PostgreSQL). Applied to the commands and the examples' copies.
PLACEHOLDERS = {
    "127.0.0.1:8765": "127.0.0.1:{sim}",
    "--port 8765": "--port {sim}",
    "127.0.0.1:5000": "127.0.0.1:{moto}",
    "-p 5000": "-p {moto}",
    "postgresql://USER:PASSWORD@127.0.0.1:5432/DB": "{dsn}",
}
# generate.count in the examples -> count in the scratch copies.
FLEET_SCALE = {7000: 700, 100_000: 1000, 800: 80}
BLOCK_TIMEOUT = 150  # seconds for one block, servers included
MARKERS_WITHOUT_RUN = {"cluster", "ci"}
_databases = itertools.count()


def shell_blocks() -> list[Block]:
    return [b for doc in DOCUMENTS for b in blocks_of(doc) if b.language in SHELL_LANGUAGES]


def executed_blocks() -> list[Block]:
    return [b for b in shell_blocks() if b.marker not in MARKERS_WITHOUT_RUN]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Reader:
    """One reader working through one document in order: one directory, one simulator port,
    one moto port and one database for all its blocks, as at a terminal."""

    scratch: Path
    ports: dict[str, int]
    dsn: str

    @property
    def placeholders(self) -> dict[str, str]:
        return {k: v.format(dsn=self.dsn, **self.ports) for k, v in PLACEHOLDERS.items()}


_readers: dict[Path, Reader] = {}


def reader_of(document: Path, factory: pytest.TempPathFactory, dsn: str) -> Reader:
    if document not in _readers:
        ports = {"sim": free_port(), "moto": free_port()}
        reader = Reader(factory.mktemp(document.parent.name), ports, fresh_database(dsn))
        make_scratch(reader.scratch, reader.placeholders, FLEET_SCALE)
        _readers[document] = reader
    return _readers[document]


def fresh_database(dsn: str) -> str:
    name = f"docs_{next(_databases)}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    return re.sub(r"/[^/]*$", f"/{name}", dsn)


def test_every_shell_block_is_run_or_marked() -> None:
    blocks = shell_blocks()
    assert len(blocks) >= 8, [b.id for b in blocks]
    unknown = [b.id for b in blocks if b.marker not in CHECKS.keys() | MARKERS_WITHOUT_RUN]
    assert not unknown, f"mark these <!-- docs-test: NAME --> (cluster, ci, or a check): {unknown}"
    names = [b.marker for b in executed_blocks()]
    assert sorted(names) == sorted(CHECKS), "each check runs exactly one block"


@pytest.mark.parametrize(
    "block", executed_blocks(), ids=lambda b: f"{b.path.relative_to(ROOT)}:{b.marker}"
)
def test_block_runs_as_documented(
    block: Block, tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> None:
    """Blocks run in document order, each in its document's reader's directory (a block run
    alone with -k still works: each starts its own servers)."""
    reader = reader_of(block.path, tmp_path_factory, postgres_dsn)
    started = [i for i, c in enumerate(block.commands) if c.background]
    for number, _ in enumerate(started, start=1):
        assert re.search(rf"^kill .*%{number}\b", block.body, re.M), (
            f"{block.id}: background job %{number} is never stopped: a reader's next block "
            "would find its port taken"
        )
    env = scratch_env(Path(sys.prefix) / "bin")
    run = run_block(block, reader.scratch, reader.placeholders, reader.ports, env, BLOCK_TIMEOUT)
    for index, result in enumerate(run.results):
        assert result.exit_code == result.command.expected_exit, run.describe(index)
    CHECKS[str(block.marker)](run, reader.dsn)


def test_cluster_and_ci_blocks_are_what_their_marker_says() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for block in shell_blocks():
        if block.marker == "cluster":
            assert re.search(r"\b(kubectl|helm)\b", block.body), block.id
        elif block.marker == "ci":
            for command in block.commands:
                words = command.text.split()
                assert words[0] == "make" and set(words[1:]) <= targets, (block.id, words)


def test_every_examples_table_row_is_run_by_a_block() -> None:
    commands = " ".join(c.text for b in executed_blocks() for c in b.commands)
    for cells in table_rows(EXAMPLES_README, "manifest"):
        for manifest in re.findall(r"`([\w/.-]+\.yaml)`", cells[0]):
            assert f"fleetsync run examples/{manifest}" in commands, manifest
    listed = " ".join(c[0] for c in table_rows(EXAMPLES_README, "manifest"))
    shipped = {str(p.relative_to(ROOT / "examples")) for p in (ROOT / "examples").glob("*/*.yaml")}
    production_only = {"plants/syncschedule.yaml"}  # DynamoDB in AWS; test_examples runs it
    # The simulator's Deployment and Service for a cluster (README, kind e2e).
    production_only |= {"simulator/namespaces.yaml", "simulator/simulator.yaml"}
    assert {m for m in shipped if m not in listed} == production_only


def test_the_scale_table_matches_the_examples() -> None:
    counts = {
        int(c)
        for p in (ROOT / "examples").glob("*/*.yaml")
        for c in re.findall(r"\bcount: (\d+)", p.read_text())
    }
    assert set(FLEET_SCALE) <= counts, "a scaled size no longer appears in any example"
