"""Run one documentation block in bash, in a scratch copy of the repository's examples.

The block runs as one script, so ``export``, ``cd`` and job numbers (``kill %1``) behave
as they do for a reader at a terminal. The script is the block's own commands, with:

- the placeholders of ``test_docs.PLACEHOLDERS`` substituted (ports, the DSN);
- before each command, a marker line on stdout and stderr, and after it, its exit code, so
  each command's output and exit code can be checked on its own;
- each background command's output sent to a log file, and a bounded wait for the ports it
  was given to listen on;
- on exit, every background job still running is stopped and waited for.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from doc_blocks import Block, Command

ROOT = Path(__file__).resolve().parents[2]
_CMD = "@@docs-cmd"
_RC = "@@docs-rc"

PRELUDE = r"""
__wait_port() {  # PORT PID; 300 tries, 0.1 s apart: the server must listen within 30 s
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "docs-test: the server for port $1 exited" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "docs-test: nothing listens on port $1 after 30 s" >&2
  return 1
}
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
"""


@dataclass
class Result:
    command: Command
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class BlockRun:
    block: Block
    scratch: Path
    ports: Mapping[str, int]
    results: list[Result] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def describe(self, index: int) -> str:
        result = self.results[index]
        tail = "".join(
            f"background command {i}'s output: {log.read_text(errors='replace')[-1500:]}\n"
            for i, log in self.logs.items()
            if log.exists()
        )
        return (
            f"{self.block.path.relative_to(ROOT)}:{self.block.line} command {index}:"
            f" {result.command.text}\n"
            f"exit {result.exit_code} (expected {result.command.expected_exit})\n"
            f"stdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-1500:]}\n{tail}"
        )


def substitute(text: str, placeholders: Mapping[str, str]) -> str:
    for documented, actual in placeholders.items():
        text = text.replace(documented, actual)
    return text


def make_scratch(scratch: Path, placeholders: Mapping[str, str], counts: Mapping[int, int]) -> None:
    """The examples (placeholders substituted, fleets scaled by ``counts``), the Makefile,
    and ``.venv`` pointing at the virtualenv running the tests."""
    for source in (ROOT / "examples").rglob("*"):
        target = scratch / source.relative_to(ROOT)
        if source.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        text = substitute(source.read_text(encoding="utf-8"), placeholders)
        if source.suffix == ".yaml":
            text = scale(text, counts)
        target.write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "Makefile", scratch / "Makefile")
    (scratch / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)


def scale(manifest: str, counts: Mapping[int, int]) -> str:
    def one(match: re.Match[str]) -> str:
        count = int(match.group(1))
        return f"count: {counts.get(count, count)}"

    return re.sub(r"\bcount: (\d+)", one, manifest)


def script(block: Block, placeholders: Mapping[str, str], ports: Mapping[str, int],
           scratch: Path) -> tuple[str, dict[int, Path]]:  # fmt: skip
    lines = [PRELUDE]
    logs: dict[int, Path] = {}
    for i, command in enumerate(block.commands):
        text = substitute(command.text, placeholders)
        lines.append(f"echo '{_CMD} {i}'; echo '{_CMD} {i}' >&2")
        if command.background:
            logs[i] = scratch / f".docs-test-background-{block.line}-{i}.log"
            lines.append(f"{text[:-1].rstrip()} >{shlex.quote(str(logs[i]))} 2>&1 &")
            waits = [p for p in ports.values() if re.search(rf"\b{p}\b", text)]
            lines.append("__pid=$!; __rc=0")
            lines.extend(f"__wait_port {port} $__pid || __rc=$?" for port in waits)
            lines.append(f"echo '{_RC} {i}' $__rc")
        else:
            lines.extend((text, f"echo '{_RC} {i}' $?"))
    return "\n".join(lines) + "\n", logs


def _split(output: str, count: int) -> tuple[list[str], dict[int, int]]:
    parts = [""] * count
    codes: dict[int, int] = {}
    current = -1
    for line in output.splitlines(keepends=True):
        if line.startswith(_CMD):
            current = int(line.split()[1])
        elif line.startswith(_RC):
            _, index, code = line.split()
            codes[int(index)] = int(code)
        elif current >= 0:
            parts[current] += line
    return parts, codes


def run_block(
    block: Block,
    scratch: Path,
    placeholders: Mapping[str, str],
    ports: Mapping[str, int],
    env: Mapping[str, str],
    timeout: float,
) -> BlockRun:
    text, logs = script(block, placeholders, ports, scratch)
    path = scratch / f".docs-test-{block.line}.sh"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["bash", str(path)], cwd=scratch, env=dict(env), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    commands = block.commands
    outs, codes = _split(done.stdout, len(commands))
    errs, _ = _split(done.stderr, len(commands))
    run = BlockRun(block=block, scratch=scratch, ports=ports, logs=logs)
    for i, command in enumerate(commands):
        run.results.append(Result(command, codes.get(i), outs[i], errs[i]))
    return run


def scratch_env(venv_bin: Path) -> dict[str, str]:
    """The caller's environment with the virtualenv first on PATH, and no secrets or AWS
    settings that would make a documented command work for the wrong reason."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLEETSYNC_", "AWS_", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS"))
    }
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env
