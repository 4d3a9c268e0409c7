"""asyncio waits in shared memory: one slot, eventfd and C thread per loop (mpevent.shm._loop)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _loop


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _set_each(events: list[mpevent.Event], go: mpevent.Event) -> None:
    go.wait(30)
    for event in events:
        event.set()


def test_a_thousand_waits_on_a_thousand_objects_all_complete(processes: ProcessRunner) -> None:
    events = [mpevent.Event() for _ in range(1000)]
    go = mpevent.Event()
    child = processes.start(_set_each, events, go)

    async def main() -> list[bool]:
        waits = [asyncio.create_task(event.wait_async(60)) for event in events]
        while sum(event._record.info()["waiters"] for event in events[-10:]) < 10:
            await asyncio.sleep(0.001)
        go.set()
        return await asyncio.gather(*waits)

    assert asyncio.run(asyncio.wait_for(main(), 120)) == [True] * 1000
    assert processes.join(child) == 0
    assert all(event._record.info()["waiters"] == 0 for event in events)


def test_one_thread_per_loop_and_none_after_it() -> None:
    events = [mpevent.Event() for _ in range(50)]
    before = _threads()

    async def main() -> int:
        waits = [asyncio.create_task(event.wait_async(30)) for event in events]
        while events[-1]._record.info()["waiters"] < 1:
            await asyncio.sleep(0.001)
        during = _threads()
        for event in events:
            event.set()
        assert await asyncio.gather(*waits) == [True] * 50
        return during

    assert asyncio.run(main()) == before + 1  # fifty waits, one notifier thread
    gc.collect()
    assert not [loop for loop in _loop._loops if isinstance(loop, asyncio.AbstractEventLoop)]
    assert _threads() == before


def test_a_wait_times_out_and_leaves_nothing_queued() -> None:
    event = mpevent.Event()
    assert asyncio.run(event.wait_async(0.05)) is False
    assert event._record.info()["waiters"] == 0


def _waiters_of_running_loop() -> _loop.LoopWaiters:
    (waiters,) = _loop._loops[asyncio.get_running_loop()].values()
    return waiters


def test_a_woken_wait_gives_its_link_back_once_the_task_moved_on() -> None:
    # leave() of a set record runs just after the woken task's step (the
    # setter dequeued the link already): the link is reused, not leaked.
    event = mpevent.Event()

    async def main() -> tuple[int, int]:
        waiting = asyncio.create_task(event.wait_async(30))
        while event._record.info()["waiters"] < 1:
            await asyncio.sleep(0.001)
        waiters = _waiters_of_running_loop()
        event.set()
        assert await waiting is True
        await asyncio.sleep(0)  # one more loop iteration: the scheduled leave() ran
        return len(waiters.lot.pending), len(waiters.lot.spare)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (0, 1)


def test_a_loop_closed_under_an_awaiting_task_leaves_nothing_queued() -> None:
    event = mpevent.Event()
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(event.wait_async(30))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert event._record.info()["waiters"] == 1
    finally:
        loop.close()  # the task never finishes: its finally never runs
    del task, loop
    gc.collect()
    _loop.sweep()
    assert event._record.info()["waiters"] == 0
    assert _loop.descriptors() == 0


def test_an_idle_loop_with_waiters_is_not_woken_by_the_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The notifier applies the recheck rule in C at each tick and wakes the
    # loop only if a record moved: two ticks pass here, and nothing moves.
    looks: list[int] = []
    readable = _loop.LoopWaiters.readable

    def counted(waiters: _loop.LoopWaiters) -> None:
        looks.append(len(waiters.pending))
        readable(waiters)

    monkeypatch.setattr(_loop.LoopWaiters, "readable", counted)
    event = mpevent.Event()
    assert asyncio.run(event.wait_async(2.5)) is False
    assert looks == []


def _set_when_told(event: mpevent.Event, go: mpevent.Event) -> None:
    go.wait(30)
    event.set()


def _count_readers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each of a loop's readers ran: the socket's and the eventfd's."""
    calls = {"datagrams": 0, "readable": 0}
    for name in calls:
        original = getattr(_loop.LoopWaiters, name)

        def counted(waiters: _loop.LoopWaiters, name: str = name, original: Any = original) -> None:
            calls[name] += 1
            original(waiters)

        monkeypatch.setattr(_loop.LoopWaiters, name, counted)
    return calls


def _awaited_from_another_process(
    processes: ProcessRunner, before_set: Callable[[_loop.LoopWaiters], None] = lambda w: None
) -> bool:
    """wait_async() on an Event that another process sets once the wait is
    queued; *before_set* sees the loop's waiters first."""
    event, go = mpevent.Event(), mpevent.Event()
    child = processes.start(_set_when_told, event, go)

    async def main() -> bool:
        waiting = asyncio.ensure_future(event.wait_async(30))
        await asyncio.sleep(0)  # queued before the set
        (waiters,) = _loop._loops[asyncio.get_running_loop()].values()
        before_set(waiters)
        go.set()
        return await waiting

    woken = asyncio.run(main())
    processes.join(child)
    return woken


def test_a_set_in_another_process_reaches_the_loop_by_datagram(
    processes: ProcessRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_readers(monkeypatch)
    assert _awaited_from_another_process(processes) is True
    # The datagram came (the notifier may have seen the word up too, at a
    # moment it was awake, and told the loop once more: harmless).
    assert calls["datagrams"] >= 1


def test_a_setter_that_cannot_reach_the_socket_wakes_the_loop_through_the_thread(
    processes: ProcessRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token nobody is bound to stands in for a setter in another network
    # namespace: its datagram fails, and the futex wake goes to the notifier.
    calls = _count_readers(monkeypatch)

    def wrong_token(waiters: _loop.LoopWaiters) -> None:
        assert waiters.socket is not None
        waiters.native.set_loop(waiters.slot, waiters.token ^ 1)

    assert _awaited_from_another_process(processes, wrong_token) is True
    assert calls["readable"] >= 1 and calls["datagrams"] == 0


def _claim_then_die(result: mpevent.AsyncResult, claimed: mpevent.Event) -> None:
    result.claim()
    claimed.set()
    os.kill(os.getpid(), 9)


def test_an_awaited_result_fails_within_a_tick_of_its_claimers_death(
    processes: ProcessRunner,
) -> None:
    # The tick that finds the dead claimer is the one that tells the loop.
    result, claimed = mpevent.AsyncResult(), mpevent.Event()

    async def main() -> float:
        waiting = asyncio.ensure_future(result.get_async(30))
        await asyncio.sleep(0)  # queued on the loop before the claimer runs
        child = processes.start(_claim_then_die, result, claimed)
        assert await asyncio.get_running_loop().run_in_executor(None, claimed.wait, 30)
        await asyncio.get_running_loop().run_in_executor(None, processes.join, child)
        killed = asyncio.get_running_loop().time()
        with pytest.raises(mpevent.ProcessDied):
            await waiting
        return asyncio.get_running_loop().time() - killed

    assert asyncio.run(main()) < 1.5


def test_a_set_and_clear_during_the_wait_counts_as_set() -> None:
    event = mpevent.Event()

    async def main() -> bool:
        task = asyncio.create_task(event.wait_async(30))
        while event._record.info()["waiters"] < 1:
            await asyncio.sleep(0.001)
        event.set()
        event.clear()
        return await task

    assert asyncio.run(main()) is True


@pytest.fixture
def gevent() -> Iterator[Any]:
    """gevent, with this thread's hub destroyed after the test (its loop holds
    descriptors; its loop waiters go with it)."""
    gevent = pytest.importorskip("gevent")
    yield gevent
    gevent.get_hub().destroy(destroy_loop=True)
    gc.collect()
    assert _loop.descriptors() == 0


def test_a_killed_gevent_greenlet_leaves_no_waiter_queued(gevent: Any) -> None:
    event = mpevent.Event()
    waiting = gevent.spawn(event.wait, 30)
    while event._record.info()["waiters"] < 1:
        gevent.sleep(0.001)
    waiting.kill()
    assert waiting.dead
    assert event._record.info()["waiters"] == 0


def _set_second(events: list[mpevent.Event], go: mpevent.Event) -> None:
    go.wait(30)
    events[1].set()


def test_a_gevent_greenlet_waits_on_several_objects_set_by_another_process(
    processes: ProcessRunner, gevent: Any
) -> None:
    events, go = [mpevent.Event() for _ in range(3)], mpevent.Event()
    child = processes.start(_set_second, events, go)
    waiting = gevent.spawn(mpevent.wait, events, 30, 1)
    while events[2]._record.info()["waiters"] < 1:
        gevent.sleep(0.001)  # this greenlet runs: the waiting one blocks only itself
    assert not waiting.dead
    go.set()
    assert waiting.get(timeout=30) == [events[1]]
    assert processes.join(child) == 0
    assert all(event._record.info()["waiters"] == 0 for event in events)
