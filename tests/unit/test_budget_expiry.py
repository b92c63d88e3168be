"""Budget keys with no holders expire (issue 14, item 5): the book forgets a key once no
holder wants it and every grant handed out under it has lapsed — never while one may still
be in use — so memory and per-renewal work do not grow with every key ever seen.
Pure, with the clock passed in; ``test_coordination_budgets.py`` shows the limit still holds."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.timing import LeaseTiming

T0 = 1_795_529_900.0
TIMING = LeaseTiming(lease_seconds=3.0, reservation_seconds=30.0)
# Long after any grant could be valid: every reservation, lease and silent holder is over.
LONG_AFTER = TIMING.reservation_seconds + TIMING.holder_timeout + 2 * TIMING.lease_seconds + 2


def latest_until(grants: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    return {key: max((g["until"] for g in gs), default=0.0) for key, gs in grants.items()}


def test_a_released_key_stays_while_its_grants_stand_and_goes_once_they_lapse() -> None:
    book = BudgetBook(TIMING)
    until = 0.0
    for step in range(20):
        grants = book.renew("run-a/0/pod", {"vendor-a": 10.0}, T0 + step * 0.5)
        until = max(until, *latest_until(grants).values())  # type: ignore[arg-type]
    book.release("run-a/0/pod", T0 + 10)
    assert book.holders("vendor-a") == []
    assert until > T0 + 30, "the reservation outlives the holder"
    now = T0 + 10
    while now < until:  # another run's renewals drive the sweep meanwhile
        book.renew("run-b/0/pod", {"vendor-b": 5.0}, now)
        assert "vendor-a" in book.tracked_keys(), f"dropped at {now - T0:.1f} s"
        now += 1.0
    book.renew("run-b/0/pod", {"vendor-b": 5.0}, until + TIMING.lease_seconds)
    assert book.tracked_keys() == ["vendor-b"]


def test_a_crashed_holders_key_expires_without_anyone_renewing_it() -> None:
    book = BudgetBook(TIMING)
    book.renew("run-a/0/pod", {"vendor-a": 10.0}, T0)  # then it is never heard of again
    book.renew("run-b/0/pod", {"vendor-b": 5.0}, T0 + 1)
    assert book.tracked_keys() == ["vendor-a", "vendor-b"]
    book.renew("run-b/0/pod", {"vendor-b": 5.0}, T0 + LONG_AFTER)
    assert book.tracked_keys() == ["vendor-b"]
    assert book.holders("vendor-a") == [] and book.rate_of("vendor-a") == 0.0


def test_a_holder_that_stops_wanting_a_key_lets_it_expire() -> None:
    book = BudgetBook(TIMING)
    book.renew("run-a/0/pod", {"vendor-a": 10.0, "vendor-b": 5.0}, T0)
    book.renew("run-a/0/pod", {"vendor-b": 5.0}, T0 + 1)
    assert book.holders("vendor-a") == []
    book.renew("run-a/0/pod", {"vendor-b": 5.0}, T0 + LONG_AFTER)
    assert book.tracked_keys() == ["vendor-b"]


def test_a_thousand_runs_come_and_go_and_the_book_is_back_to_the_live_ones() -> None:
    book = BudgetBook(TIMING)
    now = T0
    for run in range(1000):
        book.renew(f"run-{run}/0/pod", {f"key-{run}": 10.0}, now)
        if run % 2:
            book.release(f"run-{run}/0/pod", now)  # finished; the others crash
        now += 0.01
    book.renew("live/0/pod", {"live-key": 10.0}, now)
    assert len(book.tracked_keys()) == 1001
    later = now + LONG_AFTER
    for step in range(200):  # the live run's renewals alone sweep the rest away
        book.renew("live/0/pod", {"live-key": 10.0}, later + step)
    assert book.tracked_keys() == ["live-key"]
    # A key seen again after it expired starts afresh, and is granted as before.
    grants = book.renew("run-7/0/pod", {"key-7": 10.0}, later + 300)
    assert grants["key-7"] and book.holders("key-7") == ["run-7/0/pod"]


def test_release_all_of_a_deleted_run_lets_its_keys_expire() -> None:
    book = BudgetBook(TIMING)
    for shard in range(4):
        book.renew(f"gone/{shard}/pod", {"shared": 20.0, f"own-{shard}": 5.0}, T0)
    book.renew("kept/0/pod", {"shared": 20.0}, T0)
    book.release_all("gone/", T0 + 1)
    assert book.holders("shared") == ["kept/0/pod"]
    book.renew("kept/0/pod", {"shared": 20.0}, T0 + LONG_AFTER)
    assert book.tracked_keys() == ["shared"]


@dataclass(frozen=True)
class Step:
    holder: int
    keys: frozenset[int]
    release: bool
    dt: float


steps = st.builds(
    Step,
    holder=st.integers(0, 5),
    keys=st.frozensets(st.integers(0, 6), max_size=3),
    release=st.booleans(),
    dt=st.sampled_from([0.0, 0.3, 1.0, 2.5, 7.0, 31.0]),
)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(steps, max_size=60))
def test_no_key_is_forgotten_while_a_grant_of_it_is_valid_and_all_go_in_the_end(
    plan: list[Step],
) -> None:
    book = BudgetBook(TIMING)
    now = T0
    valid_until: dict[str, float] = {}  # the latest end of any grant handed out per key
    for step in plan:
        now += step.dt
        holder = f"run-{step.holder}/0/pod"
        if step.release:
            book.release(holder, now)
        else:
            wants = {f"key-{k}": 5.0 + k for k in sorted(step.keys)}
            for key, until in latest_until(book.renew(holder, wants, now)).items():  # type: ignore[arg-type]
                valid_until[key] = max(valid_until.get(key, 0.0), until)
        known = set(book.tracked_keys())
        for key, until in valid_until.items():
            assert until <= now or key in known, f"{key} dropped with a grant valid to {until}"
    book.expire(now + LONG_AFTER)
    assert book.tracked_keys() == []
