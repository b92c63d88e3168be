"""Who may report what: pure checks of a worker's report against what the cluster shows.

A report is accepted only when every link holds, each checked against objects the
controller watches, never against what the reporter says about itself:

- the token (TokenReview) was issued for this pod, under the run's worker ServiceAccount,
  and the pod runs under that ServiceAccount;
- the pod is controlled (ownerReference UID) by the run's Job, and that Job by the SyncJob;
- the pod's completion index is a canonical integer (``0``, ``17``; not ``00`` or `` 0``)
  in ``[0, shards)`` and is the shard the report names;
- the body is a well-formed report (``parse_report``: 400 naming the field), and the
  rate-limit keys it asks budget for are keys of the run's own spec.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import typing_extensions
from pydantic import TypeAdapter, ValidationError
from typing_extensions import is_typeddict

from fleetsync.api.limits import limit_for
from fleetsync.api.progress import ReportWire
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.objects import Job, KubeObject, Pod

__all__ = [
    "COMPLETION_INDEX",
    "MAX_WANTS",
    "Identity",
    "Refusal",
    "RunView",
    "allowed_keys",
    "check_reporter",
    "parse_report",
]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
MAX_WANTS = 1_000  # rate-limit keys one report may name
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
Body = Mapping[str, Any]


def _pydantic_shape(tp: Any) -> Any:
    """``tp`` with every ``typing.TypedDict`` in it rebuilt as a ``typing_extensions`` one,
    which pydantic requires on Python < 3.12; the shape itself stays in api/progress.py."""
    if is_typeddict(tp):
        hints = get_type_hints(tp, include_extras=True)
        fields = {name: _pydantic_shape(hint) for name, hint in hints.items()}
        return typing_extensions.TypedDict(tp.__name__, fields, total=tp.__total__)  # type: ignore[operator]
    origin, args = get_origin(tp), get_args(tp)
    if origin is None or not args:
        return tp
    if origin is Literal:
        return tp
    shaped = tuple(_pydantic_shape(arg) for arg in args)
    if origin is types.UnionType:
        return Union[shaped]  # noqa: UP007 - rebuilt from its parts
    return origin[shaped] if len(shaped) > 1 else origin[shaped[0]]


_REPORT: TypeAdapter[Any] = TypeAdapter(_pydantic_shape(ReportWire))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token belongs to, as the API server's TokenReview says."""

    namespace: str
    service_account: str
    pod: str
    pod_uid: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 400, 403 or 503 (retry: the controller has not seen the object yet)
    reason: str


@dataclass(frozen=True, slots=True)
class RunView:
    """What the controller knows of a run, to judge its reporters by."""

    syncjob_uid: str
    job: Job | None
    shards: int
    service_account: str
    may_want: Callable[[str], bool]


def parse_report(raw: object) -> ReportWire | Refusal:
    """The report, or a 400 naming the first failing field. Strict: ``"0"`` is not 0."""
    try:
        report: ReportWire = _REPORT.validate_python(raw, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return Refusal(400, f"{where}: {first['msg']}")
    if len(report["wants"]) > MAX_WANTS:
        return Refusal(400, f"wants: more than {MAX_WANTS} keys")
    for key, rate in report["wants"].items():
        if not math.isfinite(rate) or rate <= 0:
            return Refusal(400, f"wants.{key}: a rate must be a positive finite number")
    for key, left in report.get("backlog", {}).items():
        if key not in report["wants"]:
            return Refusal(400, f"backlog.{key}: not a key the report wants")
        if left < 0:
            return Refusal(400, f"backlog.{key}: must be 0 or more")
    return report


def allowed_keys(spec: SyncJobSpec) -> Callable[[str], bool]:
    """The rate-limit keys a run's shards may ask budget for: those its spec yields."""
    source = spec.source
    named = source.vendors.items if source.vendors else {}
    keys = {key for vendor in named if (key := limit_for(source, vendor)[0]) is not None}
    probe = "\x00"  # a vendor not named in the spec: its key, if it depends on the name
    default, _ = limit_for(source, probe)
    per_vendor = default == f"vendor:{probe}"
    if default is not None and not per_vendor:
        keys.add(default)
    frozen = frozenset(keys)
    return lambda key: key in frozen or (per_vendor and key.startswith("vendor:"))


def _controller_uid(body: KubeObject) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _shard_of(pod: Pod, shards: int) -> int | None:
    index = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    if not isinstance(index, str) or not _CANONICAL_INDEX.fullmatch(index):
        return None
    shard = int(index)
    return shard if shard < shards else None


def check_reporter(
    identity: Identity, report: ReportWire, pod: Pod, view: RunView
) -> Refusal | None:
    """None when ``pod`` (the token's) may send ``report`` for the run ``view`` shows."""
    meta = pod.get("metadata") or {}
    if (
        report["pod"] != identity.pod
        or (meta.get("labels") or {}).get("fleetsync.dev/run") != report["run"]
    ):
        return Refusal(403, "this pod may report only for its own run")
    account = (pod.get("spec") or {}).get("serviceAccountName")
    if identity.service_account != view.service_account or account != view.service_account:
        return Refusal(403, "the pod does not run under the run's worker ServiceAccount")
    if view.job is None:
        return Refusal(503, "the run's Job is not known here yet; retry")
    if _controller_uid(pod) != view.job["metadata"].get("uid"):
        return Refusal(403, "the pod is not controlled by the run's Job")
    if _controller_uid(view.job) != view.syncjob_uid:
        return Refusal(403, "the run's Job is not controlled by its SyncJob")
    if _shard_of(pod, view.shards) != report["shard"]:
        return Refusal(403, "this pod may report only for its own shard")
    for key in report["wants"]:
        if not view.may_want(key):
            return Refusal(403, f"wants.{key}: not a rate-limit key of this run's spec")
    return None
