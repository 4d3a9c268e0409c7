"""asyncio: awaiting mpevent objects without blocking the loop."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ProcessRunner

import mpevent


def _set_later(event: mpevent.Event, go: mpevent.Event) -> None:
    go.wait(30)
    event.set()


def _set_result(result: mpevent.AsyncResult, go: mpevent.Event) -> None:
    go.wait(30)
    result.set({"answer": 42})


def test_hundred_tasks_await_one_event_set_by_another_process(
    processes: ProcessRunner,
) -> None:
    event, go = mpevent.Event(), mpevent.Event()
    child = processes.start(_set_later, event, go, method="spawn")

    async def main() -> tuple[list[bool], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.create_task(ticker())
        waiters = [asyncio.create_task(event.wait_async(30)) for _ in range(100)]
        await asyncio.sleep(0.05)
        ticks_before_set = ticks
        go.set()
        results = await asyncio.gather(*waiters)
        stop.set()
        await ticking
        return results, ticks_before_set

    results, ticks = asyncio.run(asyncio.wait_for(main(), 60))
    assert results == [True] * 100
    assert ticks > 5  # the loop kept running other tasks while they waited
    assert processes.join(child) == 0


def test_get_async_receives_a_value_from_another_process(processes: ProcessRunner) -> None:
    result, go = mpevent.AsyncResult(), mpevent.Event()
    child = processes.start(_set_result, result, go)

    async def main() -> object:
        go.set()
        return await result.get_async(30)

    assert asyncio.run(main()) == {"answer": 42}
    assert processes.join(child) == 0


def test_wait_async_times_out() -> None:
    assert asyncio.run(mpevent.Event().wait_async(0.05)) is False
    with pytest.raises(mpevent.Timeout):
        asyncio.run(mpevent.AsyncResult().get_async(0.05))


def test_a_cancelled_wait_leaves_no_waiter_queued() -> None:
    event = mpevent.Event()

    async def main() -> None:
        tasks = [asyncio.create_task(event.wait_async()) for _ in range(3)]
        while event._record.info()["waiters"] < 3:
            await asyncio.sleep(0.001)
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert event._record.info()["waiters"] == 2
        event.set()
        assert await asyncio.gather(*tasks[1:]) == [True, True]

    asyncio.run(asyncio.wait_for(main(), 30))
    assert event._record.info()["waiters"] == 0
