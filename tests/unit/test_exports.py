"""Each module's ``__all__`` is its public surface: what other fleetsync modules import from
it must be listed there (httpx's test_exported_members does the same for its package), so a
newcomer can tell from ``__all__`` what a change to a module may break."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "fleetsync"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def _exported(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return None


def test_what_modules_import_from_each_other_is_in_their_all() -> None:
    modules = _modules()
    missing: list[str] = []
    for importer, tree in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            source = node.module
            if not source.startswith("fleetsync") or source not in modules:
                continue
            exported = _exported(modules[source])
            if exported is None:
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    continue  # a submodule, not a member
                if alias.name not in exported:
                    missing.append(f"{importer} imports {alias.name} from {source}")
    assert not missing, "\n".join(sorted(missing))


def test_every_module_lists_only_names_it_defines() -> None:
    for name, tree in _modules().items():
        exported = _exported(tree)
        if exported is None:
            continue
        defined = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        defined |= {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        defined |= {
            (alias.asname or alias.name).split(".")[0]
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        defined |= {
            node.target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        }
        assert exported <= defined, f"{name}.__all__ names {sorted(exported - defined)}"
