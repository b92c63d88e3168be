"""CustomResourceDefinitions generated from the typed models: one source of truth.

Pydantic's JSON Schema is turned into the *structural* OpenAPI v3 schema Kubernetes wants:
``$ref`` inlined, ``anyOf [X, null]`` folded into ``X``, free-form JSON marked
``x-kubernetes-preserve-unknown-fields``, ``int | "auto"`` as ``x-kubernetes-int-or-string``.
Rules the schema cannot say (exactly one source, ordered bounds) are CEL rules carried by the
models themselves (``x-kubernetes-validations`` in their JSON Schema extras), so the API
server rejects a bad manifest with the field named, before any controller sees it.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from fleetsync.api.constants import GROUP, VERSION
from fleetsync.api.v1alpha1.status import SyncJobStatus
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec, SyncScheduleStatus

__all__ = ["build_crds", "chart_crd_text", "crd_file_text", "openapi_schema"]

# JSON Schema keywords Kubernetes' structural schemas do not accept (or we do not need).
_DROP = {"title", "$defs", "discriminator", "examples", "const"}


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (by alias, inlined)."""
    raw: dict[str, Any] = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _convert(raw, defs)
    return schema


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    node = dict(node)
    for union in ("anyOf", "oneOf"):
        if union in node:
            options = [o for o in node.pop(union) if o.get("type") != "null"]
            types = {o.get("type") for o in options}
            if len(options) == 1:
                return _convert({**options[0], **node}, defs)
            elif types <= {"integer", "string"} and "integer" in types:
                node["x-kubernetes-int-or-string"] = True
                strings = [o for o in options if o.get("type") == "string"]
                enum = [v for o in strings for v in o.get("enum", [o.get("const")]) if v]
                if enum:
                    node.setdefault("x-kubernetes-validations", []).append(
                        {
                            "rule": "type(self) == int || self in " + repr(enum).replace("'", '"'),
                            "message": f"must be an integer or one of {', '.join(enum)}",
                        }
                    )
            else:
                return _free_form(node)
    # JSON Schema 2020 (pydantic) writes exclusive bounds as numbers; OpenAPI v3.0, which
    # the API server speaks, wants the bound plus a boolean flag.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), int | float) and not isinstance(
            node.get(exclusive), bool
        ):
            node[bound] = node.pop(exclusive)
            node[exclusive] = True
    if "const" in node and "enum" not in node:
        node["enum"] = [node["const"]]
    if node.get("default") is None:
        node.pop("default", None)
    typed = {"type", "properties", "enum", "x-kubernetes-int-or-string"}
    if not typed & node.keys():
        return _free_form(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "x-kubernetes-validations":
            out[key] = value  # CEL rules: passed through verbatim
        elif key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "additionalProperties" and value is False:
            # Unknown fields: the API server prunes them and kubectl's strict field
            # validation reports them by name, which is what extra="forbid" says.
            continue
        else:
            out[key] = _convert(value, defs)
    free_values = out.get("additionalProperties", {}).get("x-kubernetes-preserve-unknown-fields")
    no_schema = free_values or "additionalProperties" not in out
    if out.get("type") == "object" and "properties" not in out and no_schema:
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _free_form(node: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in node.items() if k in ("description",)}
    return {**kept, "x-kubernetes-preserve-unknown-fields": True}


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "fleetsync"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["fleetsync"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crds() -> list[dict[str, Any]]:
    """The SyncJob and SyncSchedule CRDs, as the API server should get them."""
    syncjob_spec = openapi_schema(SyncJobSpec)
    syncjob = _crd(
        "SyncJob",
        "syncjobs",
        "sj",
        syncjob_spec,
        openapi_schema(SyncJobStatus),
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.items.failed"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    schedule = _crd(
        "SyncSchedule",
        "syncschedules",
        "ss",
        openapi_schema(SyncScheduleSpec),
        openapi_schema(SyncScheduleStatus),
        [
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Active", "type": "integer", "jsonPath": ".status.activeCount"},
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    return [syncjob, schedule]


CRD_HEADER = "# Generated by `fleetsync crds` from the typed API; do not edit.\n"


def crd_file_text(document: dict[str, Any]) -> str:
    """A CRD as committed under ``crds/``."""
    return CRD_HEADER + yaml.safe_dump(document, sort_keys=False)


def chart_crd_text(document: dict[str, Any]) -> str:
    """The same CRD as a Helm template: gated by ``crds.enabled`` and, with ``crds.keep``,
    kept on ``helm uninstall`` (deleting a CRD deletes every SyncJob with it)."""
    text = yaml.safe_dump(document, sort_keys=False)
    keep = (
        "metadata:\n"
        "  annotations:\n"
        "    {{- if .Values.crds.keep }}\n"
        "    helm.sh/resource-policy: keep\n"
        "    {{- end }}\n"
    )
    return (
        "{{- if .Values.crds.enabled }}\n"
        + CRD_HEADER
        + text.replace("metadata:\n", keep, 1)
        + "{{- end }}\n"
    )
