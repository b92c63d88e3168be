"""Dead letters after a local run: list them, and run again over just those items.

The retry is an ordinary run of the same manifest whose inventory is replaced by the dead
letters' items (written to a JSON Lines file, so any number of them works). Items that
sync leave the original run's dead-letter list; those that fail again stay, with the
retry's reason.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import yaml

from fleetsync.api.manifest import load_manifest_file, load_spec
from fleetsync.api.v1alpha1 import SyncSchedule
from fleetsync.local.console import run_with_console
from fleetsync.local.runner import RunOptions
from fleetsync.sinks.base import DeadLetter
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.sinkfactory import build_sink

__all__ = ["read_dead_letters", "retry_failed_locally"]


async def read_dead_letters(
    manifest: Path, run: str | None, secrets_dir: str | None
) -> list[DeadLetter]:
    name, spec = load_spec(manifest)
    sink = build_sink(spec, secrets=SecretResolver(secrets_dir), base_dir=manifest.parent)
    await sink.open()
    try:
        return await sink.read_dead_letters(run or name)
    finally:
        await sink.close()


async def _clear(manifest: Path, run: str, keys: list[str], secrets_dir: str | None) -> None:
    _name, spec = load_spec(manifest)
    sink = build_sink(spec, secrets=SecretResolver(secrets_dir), base_dir=manifest.parent)
    await sink.open()
    try:
        await sink.clear_dead_letters(run, keys)
    finally:
        await sink.close()


def retry_failed_locally(
    manifest: Path, run: str | None, output: str, secrets_dir: str | None
) -> int:
    original = load_manifest_file(manifest)
    run_name = run or original.metadata.name
    letters = asyncio.run(read_dead_letters(manifest, run_name, secrets_dir))
    if not letters:
        print(f"run {run_name} has no dead letters")
        return 0
    document = original.to_wire()
    spec = document["spec"]
    assert isinstance(spec, dict)
    if isinstance(original, SyncSchedule):
        template = spec["jobTemplate"]
        assert isinstance(template, dict)
        spec = template["spec"]
        document = {"apiVersion": document["apiVersion"], "kind": "SyncJob", "spec": spec}
    retry_name = f"{run_name}-retry"
    document["metadata"] = {"name": retry_name}
    with tempfile.TemporaryDirectory() as tmp:
        items = Path(tmp) / "items.jsonl"
        items.write_text("".join(json.dumps(dict(letter.item)) + "\n" for letter in letters))
        assert isinstance(spec, dict)
        spec["fleet"] = {**spec["fleet"], "inventory": {"file": {"path": str(items)}}}
        retry_manifest = manifest.parent / f".{retry_name}.yaml"
        retry_manifest.write_text(yaml.safe_dump(document))
        try:
            code = run_with_console(
                RunOptions(manifest=retry_manifest, secrets_dir=secrets_dir), output=output
            )
        finally:
            retry_manifest.unlink(missing_ok=True)
    still = {
        letter.key for letter in asyncio.run(read_dead_letters(manifest, retry_name, secrets_dir))
    }
    recovered = [letter.key for letter in letters if letter.key not in still]
    asyncio.run(_clear(manifest, run_name, recovered, secrets_dir))
    if output == "text":
        print(f"{len(recovered)} of {len(letters)} dead letters of {run_name} recovered")
    return code
