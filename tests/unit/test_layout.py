"""Guards on the repository's shape that the tooling cannot express."""

from __future__ import annotations

from pathlib import Path

import fleetsync

ROOT = Path(__file__).resolve().parents[2]


def test_operator_source_root_is_not_a_package() -> None:
    # operator/__init__.py would shadow the standard library's `operator` module.
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_package_is_imported_from_the_source_root() -> None:
    assert Path(fleetsync.__file__).resolve().parent == ROOT / "operator" / "fleetsync"


def test_stdlib_operator_still_resolves() -> None:
    import operator

    assert operator.add(2, 3) == 5
