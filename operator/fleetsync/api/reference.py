"""The API reference (docs/api-reference.md), generated from the same schema as the CRDs,
so the docs cannot drift from what the API server enforces (a unit test checks)."""

from __future__ import annotations

from typing import Any

from fleetsync.api.crd import build_crds

__all__ = ["api_reference"]


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map of {_type(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤")):
        if key in node:
            strict = node.get("exclusive" + key.capitalize()) is True
            parts.append(
                f"{'>' if strict and word == '≥' else '<' if strict else word} {node[key]}"
            )
    if "minLength" in node:
        parts.append(f"length ≥ {node['minLength']}")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    for rule in node.get("x-kubernetes-validations", []):
        parts.append(rule.get("message", rule["rule"]))
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, out: list[str]) -> None:
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        field = f"{path}.{name}" if path else name
        description = " ".join(str(child.get("description", "")).split()).replace("|", "\\\\|")
        constraints = _constraints(child).replace("|", "\\\\|")
        mark = " (required)" if name in required else ""
        out.append(f"| `{field}`{mark} | {_type(child)} | {description} | {constraints} |")
        if child.get("type") == "array":
            _rows(child.get("items", {}), field + "[]", out)
        elif isinstance(child.get("additionalProperties"), dict):
            # A map of objects (e.g. vendors.items): document the fields of each value.
            _rows(child["additionalProperties"], field + ".<name>", out)
        else:
            _rows(child, field, out)


def api_reference() -> str:
    lines = [
        "# API reference (v1alpha1)",
        "",
        "Generated from the typed models by `fleetsync crds --reference docs/api-reference.md`;"
        " do not edit. The API server enforces exactly this (schema and CEL rules).",
        "",
    ]
    for crd in build_crds():
        version = crd["spec"]["versions"][0]
        kind = crd["spec"]["names"]["kind"]
        schema = version["schema"]["openAPIV3Schema"]
        lines += [f"## {kind}", ""]
        for part in ("spec", "status"):
            node = schema["properties"].get(part)
            if node is None:
                continue
            lines += [
                f"### {kind}.{part}",
                "",
                "| field | type | description | constraints |",
                "|---|---|---|---|",
            ]
            for rule in node.get("x-kubernetes-validations", []):
                lines.insert(len(lines) - 2, f"Rule: {rule.get('message', rule['rule'])}.\n")
            _rows(node, part, lines)
            lines.append("")
    return "\n".join(lines)
