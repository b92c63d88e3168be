"""Request deadlines kept by one timer (fleetsync.worker.fetch.Deadlines): each request is
cut ``seconds`` after its own start, never before; a cancel from anyone else (a shutdown)
is never taken for the deadline; a request that ended leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from fleetsync.worker.fetch import Deadlines


class Cut(Exception):
    """What a request raises when its deadline passed (the fetcher's timeout VendorError)."""


async def request(deadlines: Deadlines, done: asyncio.Future[None] | None = None) -> float:
    """A request under ``deadlines`` as the fetcher makes one: waits for ``done`` (never, if
    None); returns how long it ran, raises Cut at its deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = deadlines.enter()
    try:
        await (done if done is not None else loop.create_future())
        return loop.time() - started
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise Cut(loop.time() - started) from None
        raise
    finally:
        deadlines.leave(task)


async def test_a_stalled_request_is_cut_at_its_deadline_never_before() -> None:
    deadlines = Deadlines(0.05)
    with pytest.raises(Cut) as cut:
        await request(deadlines)
    assert cut.value.args[0] >= 0.05
    deadlines.close()


async def test_each_request_is_cut_seconds_after_its_own_start() -> None:
    # One timer serves all: set for the oldest, then for the next oldest. A request that
    # started later is not cut at the first one's deadline.
    deadlines = Deadlines(0.2)
    first = asyncio.create_task(request(deadlines))
    await asyncio.sleep(0.1)
    later = [asyncio.create_task(request(deadlines)) for _ in range(50)]
    ran = await asyncio.gather(first, *later, return_exceptions=True)
    assert all(isinstance(r, Cut) for r in ran), ran
    assert all(r.args[0] >= 0.2 for r in ran if isinstance(r, Cut))
    deadlines.close()


async def test_requests_that_end_in_time_are_never_cut_later() -> None:
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    answered = asyncio.create_task(request(deadlines, done))
    await asyncio.sleep(0)
    done.set_result(None)
    assert await answered < 0.05

    # The same task goes on (as an item's task does after its fetch): no stale deadline
    # cancels it once the first one's time has passed.
    async def then_more() -> str:
        for _ in range(3):  # a retry is a new request in the same task
            answer: asyncio.Future[None] = loop.create_future()
            loop.call_soon(answer.set_result, None)
            await request(deadlines, answer)
        await asyncio.sleep(0.1)
        return "not cut"

    assert await asyncio.create_task(then_more()) == "not cut"
    deadlines.close()


async def test_a_shutdown_cancel_at_the_deadline_is_never_taken_for_it() -> None:
    deadlines = Deadlines(0)
    stalled = asyncio.create_task(request(deadlines))
    await asyncio.sleep(0)  # it entered and waits
    stalled.cancel()  # the shard stops ...
    deadlines._fire()  # ... in the same turn as the deadline passes
    with pytest.raises(asyncio.CancelledError):
        await stalled
    deadlines.close()


async def test_a_shutdown_cancel_before_the_deadline_propagates() -> None:
    deadlines = Deadlines(10)
    stalled = asyncio.create_task(request(deadlines))
    await asyncio.sleep(0)
    stalled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled
    deadlines.close()


def test_a_fetcher_reused_on_a_new_event_loop_still_cuts_stalled_requests() -> None:
    # A timer set on a loop that ended never fires: the next loop gets its own.
    deadlines = Deadlines(0.05)

    async def left_stalled() -> None:
        waiting = asyncio.create_task(request(deadlines))  # asyncio.run cancels it at the end
        await asyncio.sleep(0)
        assert not waiting.done()

    asyncio.run(left_stalled())

    async def stalled() -> float:
        with pytest.raises(Cut) as cut:
            await asyncio.wait_for(request(deadlines), 5)  # a TimeoutError if never cut
        return float(cut.value.args[0])

    assert asyncio.run(stalled()) >= 0.05
    deadlines.close()
