"""How a run ends: the one rule both ``fleetsync run`` and the controller apply.

Once every shard has said it is done, the run's phase follows from its item counts, checked
in this order (the first that holds decides):

1. **The books must balance.** ``total = synced + unchanged + fresh + stale + failed``. Items
   still remaining after every shard said done, or more items counted than the total, mean a
   report was lost or an item counted twice: the run is Failed with reason
   ``AccountingError`` naming the counts. A run whose accounts do not add up is never
   Succeeded, whatever its other counts say.
2. **All failed.** Some items failed and not one was synced, unchanged, fresh or stale:
   Failed with ``AllItemsFailed`` (``fleetsync run`` exits 1). Nothing was kept in sync, so
   calling it partial would be wrong however ``deadLetter.maxItemFailures`` is set.
3. **Too many failed.** More than ``deadLetter.maxItemFailures`` items failed, or failed
   items are more than ``deadLetter.maxItemFailurePercent`` % of the total: Failed with
   ``TooManyItemFailures``. (The controller also applies this while the run goes on, see
   :func:`too_many_failures`, the count only: a total still growing would overstate the
   percentage.)
4. **Some failed.** PartiallySucceeded: the failed items are dead-lettered for
   ``fleetsync retry-failed``.
5. Otherwise Succeeded.

An absolute ``maxItemFailures`` cannot fit 100 and 100,000 items with one default; the
fraction (``maxItemFailurePercent``) does. Callers pass the spec's ``deadLetter`` (an int is
read as ``maxItemFailures`` alone).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetsync.api.constants import Phase, Reason
from fleetsync.api.v1alpha1.status import ItemCounts
from fleetsync.api.v1alpha1.syncjob import DeadLetterPolicy

__all__ = ["Verdict", "final_phase", "too_many_failures"]


@dataclass(frozen=True, slots=True)
class Verdict:
    phase: Phase
    reason: Reason
    message: str


def _counted(items: ItemCounts) -> int:
    return items.synced + items.unchanged + items.fresh + items.stale + items.failed


def _policy(limits: DeadLetterPolicy | int) -> DeadLetterPolicy:
    if isinstance(limits, DeadLetterPolicy):
        return limits
    return DeadLetterPolicy(max_item_failures=limits)


def too_many_failures(
    items: ItemCounts, max_item_failures: DeadLetterPolicy | int, *, finished: bool = False
) -> Verdict | None:
    """Failed as soon as more items failed than the spec allows (a run may stop early);
    the percentage only once the run ``finished`` (its total is final)."""
    policy = _policy(max_item_failures)
    if items.failed > policy.max_item_failures:
        return Verdict(
            Phase.FAILED,
            Reason.TOO_MANY_FAILURES,
            f"{items.failed} items failed, over deadLetter.maxItemFailures="
            f"{policy.max_item_failures}",
        )
    percent = policy.max_item_failure_percent
    if (
        finished
        and percent is not None
        and items.total > 0
        and items.failed * 100 > percent * items.total
    ):
        return Verdict(
            Phase.FAILED,
            Reason.TOO_MANY_FAILURES,
            f"{items.failed} of {items.total} items failed "
            f"({items.failed * 100 / items.total:.3g}%), over "
            f"deadLetter.maxItemFailurePercent={percent:g}",
        )
    return None


def final_phase(items: ItemCounts, max_item_failures: DeadLetterPolicy | int) -> Verdict:
    """The phase of a run whose shards all finished (the rule is in the module docstring)."""
    counted = _counted(items)
    if items.remaining > 0 or counted != items.total:
        return Verdict(
            Phase.FAILED,
            Reason.ACCOUNTING_ERROR,
            f"item counts do not balance: total {items.total} but synced {items.synced} + "
            f"unchanged {items.unchanged} + fresh {items.fresh} + stale {items.stale} + "
            f"failed {items.failed} = {counted} ({items.remaining} remaining after every "
            "shard finished)",
        )
    kept = counted - items.failed
    if items.failed and not kept:
        return Verdict(
            Phase.FAILED,
            Reason.ALL_ITEMS_FAILED,
            f"all {items.failed} items failed and were dead-lettered; none synced",
        )
    too_many = too_many_failures(items, max_item_failures, finished=True)
    if too_many is not None:
        return too_many
    if items.failed:
        return Verdict(
            Phase.PARTIALLY_SUCCEEDED,
            Reason.PARTIALLY_SUCCEEDED,
            f"{items.failed} of {items.total} items failed and were dead-lettered",
        )
    return Verdict(Phase.SUCCEEDED, Reason.SUCCEEDED, f"{items.total} items in sync")
