"""Shell blocks of the documentation, as the reader sees them.

A fenced block may be preceded by a marker comment, ``<!-- docs-test: NAME -->``: ``cluster``
(needs a Kubernetes cluster; the e2e suite covers it), ``ci`` (the command CI itself runs)
or the name of a check in ``test_docs.py``. A block's commands are its logical lines
(``\\``-continuations joined); a trailing ``# exit N`` comment documents a non-zero exit code.
Pure functions only: no I/O beyond reading the file given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = frozenset({"", "sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(```+)\s*([\w-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*([\w-]+)\s*-->\s*$")
_EXIT = re.compile(r"\bexit (\d+)\b")


@dataclass(frozen=True)
class Command:
    text: str  # the command without its trailing comment, continuations kept
    comment: str  # the trailing comment's text ("" if none)
    background: bool  # ends with "&": the test starts it and waits for its port

    @property
    def expected_exit(self) -> int:
        """0 unless the comment says ``exit N``."""
        found = _EXIT.search(self.comment)
        return int(found.group(1)) if found else 0


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    marker: str | None
    body: str

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}:{self.marker or 'unmarked'}"

    @property
    def commands(self) -> list[Command]:
        return commands_of(self.body)


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, with the marker on the line before it (blank
    lines between marker and fence are not allowed: the marker belongs to the next block)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start, ticks, language = i, fence.group(1), fence.group(2)
        end = start + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        marker = _MARKER.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                path=path,
                line=start + 1,
                language=language,
                marker=marker.group(1) if marker else None,
                body="\n".join(lines[start + 1 : end]),
            )
        )
        i = end + 1
    return found


def split_comment(line: str) -> tuple[str, str]:
    """``cmd 'a # b'  # note`` -> (``cmd 'a # b'``, ``note``): a ``#`` outside quotes that
    starts the line or follows whitespace begins a comment."""
    quote: str | None = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def commands_of(body: str) -> list[Command]:
    """The logical commands of a shell block; comment-only and blank lines dropped."""
    commands: list[Command] = []
    pending: list[str] = []
    for raw in body.splitlines():
        code, comment = split_comment(raw)
        if code.endswith("\\"):
            pending.append(code)
            continue
        if not code and not pending:
            continue
        text = "\n".join([*pending, code]).strip()
        pending = []
        background = text.endswith("&") and not text.endswith("&&")
        commands.append(Command(text=text, comment=comment, background=background))
    if pending:
        raise ValueError(f"block ends inside a continued command: {pending[-1]!r}")
    return commands


def table_rows(path: Path, header_first_cell: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with that cell."""
    rows: list[list[str]] = []
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            if inside:
                break
            continue
        if not inside:
            inside = cells[0] == header_first_cell
            continue
        if set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        rows.append(cells)
    return rows
