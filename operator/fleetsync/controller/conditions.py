"""Conditions from a phase, as the table in API.md (kstatus conventions + fleetsync's own).

Every condition carries ``observedGeneration``; a condition's ``lastTransitionTime`` changes
only when its status does, so GitOps tools (Argo CD, Flux) see stable objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetsync.api.constants import ConditionType, Phase, Reason
from fleetsync.api.v1alpha1.status import Condition, FailureCause

__all__ = ["Health", "causes_text", "conditions_for", "merge_conditions"]

TIMES = "\N{MULTIPLICATION SIGN}"


def causes_text(causes: Sequence[FailureCause], limit: int = 3) -> str:
    """What an event or a condition says failed: the ``limit`` most frequent causes with
    their counts (``984 x sungrow: connection refused``, x a multiplication sign), then how
    many more."""
    text = "; ".join(f"{c.count} {TIMES} {c.cause}" for c in causes[:limit])
    if len(causes) > limit:
        text += f"; {sum(c.count for c in causes[limit:])} more of {len(causes) - limit} causes"
    return text


@dataclass(frozen=True, slots=True)
class Health:
    """What makes a running or partly successful run Degraded."""

    open_breakers: tuple[str, ...] = ()
    failed_items: int = 0
    causes: str = ""  # the failures by cause (causes_text)


def _c(kind: ConditionType, true: bool, reason: str, message: str = "") -> Condition:
    return Condition(
        type=kind.value, status="True" if true else "False", reason=reason, message=message
    )


def conditions_for(
    phase: Phase, reason: str, message: str, health: Health = Health()
) -> list[Condition]:
    """The full set of conditions for ``phase`` (reason/message explain the phase)."""
    degraded_reason, degraded_message = Reason.HEALTHY.value, ""
    if health.open_breakers:
        degraded_reason = Reason.BREAKER_OPEN.value
        degraded_message = "circuit breaker open: " + ", ".join(health.open_breakers)
    elif health.failed_items:
        degraded_reason = Reason.ITEMS_FAILING.value
        degraded_message = f"{health.failed_items} items dead-lettered"
        if health.causes:
            degraded_message += f": {health.causes}"
    degraded = degraded_reason != Reason.HEALTHY.value
    T = ConditionType
    if phase in (Phase.PENDING, Phase.RUNNING):
        return [
            _c(T.RECONCILING, True, reason, message),
            _c(T.STALLED, False, reason),
            _c(T.READY, False, reason, message),
            _c(T.COMPLETE, False, reason),
            _c(T.FAILED, False, reason),
            _c(T.DEGRADED, degraded, degraded_reason, degraded_message),
            _c(T.SUSPENDED, False, reason),
        ]
    if phase is Phase.SUSPENDED:
        # A deliberate stable state: Ready, so kstatus reads Current (it takes Ready=False
        # as InProgress) and `helm --wait`/Flux do not hang; Suspended says why.
        return [
            _c(T.RECONCILING, False, reason),
            _c(T.STALLED, False, reason),
            _c(T.READY, True, reason, message),
            _c(T.COMPLETE, False, reason),
            _c(T.FAILED, False, reason),
            _c(T.SUSPENDED, True, reason, message),
        ]
    if phase is Phase.SUCCEEDED:
        return [
            _c(T.RECONCILING, False, reason),
            _c(T.STALLED, False, reason),
            _c(T.READY, True, reason, message),
            _c(T.COMPLETE, True, reason, message),
            _c(T.FAILED, False, reason),
            _c(T.DEGRADED, False, reason),
            _c(T.SUSPENDED, False, reason),
        ]
    if phase is Phase.PARTIALLY_SUCCEEDED:
        return [
            _c(T.RECONCILING, False, reason),
            _c(T.STALLED, False, reason),
            _c(T.READY, True, reason, message),
            _c(T.COMPLETE, True, Reason.PARTIALLY_SUCCEEDED.value, message),
            _c(T.FAILED, False, reason),
            _c(
                T.DEGRADED,
                True,
                degraded_reason if degraded else Reason.ITEMS_FAILING,
                f"{message}: {health.causes}" if health.causes else message,
            ),
            _c(T.SUSPENDED, False, reason),
        ]
    return [
        _c(T.RECONCILING, False, reason),
        _c(T.STALLED, True, reason, message),
        _c(T.READY, False, reason, message),
        _c(T.COMPLETE, False, reason),
        _c(T.FAILED, True, reason, message),
        _c(T.SUSPENDED, False, reason),
    ]


def merge_conditions(
    old: list[Condition], new: list[Condition], *, generation: int | None, now: str
) -> list[Condition]:
    """Stamp ``observedGeneration``; keep ``lastTransitionTime`` unless the status flipped."""
    previous = {c.type: c for c in old}
    merged: list[Condition] = []
    for condition in new:
        before = previous.get(condition.type)
        since = before.last_transition_time if before and before.status == condition.status else now
        merged.append(
            condition.model_copy(
                update={"last_transition_time": since, "observed_generation": generation}
            )
        )
    return merged
