"""The parking lot: timeouts, per-thread slots, parking on many records."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

import mpevent
from mpevent.shm import _parking


def test_a_thread_keeps_one_slot_and_returns_it_when_it_ends() -> None:
    event = mpevent.Event()
    arena = event._record.arena
    gc.collect()
    before = arena.native.statistics()["slots_live"]
    slots: list[int] = []

    def waiter() -> None:
        event.wait(0.001)
        event.wait(0.001)
        slots.append(_parking.slot_for(arena))

    threads = [threading.Thread(target=waiter) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(slots)) >= 1
    del threads
    gc.collect()
    assert arena.native.statistics()["slots_live"] == before


def test_forked_child_does_not_share_its_parents_slot() -> None:
    event = mpevent.Event()
    parent_slot = _parking.slot_for(event._record.arena)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its slot and leaves at once
        try:
            os.write(write, str(_parking.slot_for(event._record.arena)).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child_slot = int(os.read(read, 64))
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert child_slot != parent_slot


def test_wait_many_reports_what_was_already_set() -> None:
    events = [mpevent.Event() for _ in range(3)]
    events[1].set()
    records = [event._record for event in events]
    assert _parking.wait_many(records, 0.0) == [1]


def test_wait_many_times_out_empty() -> None:
    events = [mpevent.Event() for _ in range(3)]
    start = time.monotonic()
    assert _parking.wait_many([e._record for e in events], 0.05) == []
    assert time.monotonic() - start >= 0.04


def test_wait_is_interruptible_by_signals() -> None:
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    event = mpevent.Event()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            event.wait(30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    info = event._record.native.record_info(event._record.index)
    assert info["waiters"] == 0  # the interrupted waiter left no registration


def test_idle_waiters_wake_about_once_a_second_per_process_not_per_thread() -> None:
    from mpevent.tools import bench as _bench

    # 40 threads in 2 processes over 2 s: a re-check per thread would be ~80
    # wakeups; the per-process watch makes it ~4.
    cost = _bench.idle_cost(processes=2, threads=20, seconds=2.0)
    assert cost["wakeups per second"] <= 2 * 1.0 + 2.0


@pytest.mark.parametrize("kind", ["tasks", "callbacks", "everyone"])
def test_idle_loops_and_hubs_with_waiters_are_never_woken(kind: str) -> None:
    """One watch per process: only its holder wakes, once a second, whatever waits.

    20 asyncio tasks (a loop and its notifier thread), 20 rawlink()
    callbacks (the hub thread), or 20 of each and 20 blocked threads, in
    each of 2 processes.  Before the one watch, each loop's notifier and
    each hub ticked once a second on their own beside the watch of the
    blocked threads: "everyone" cost 3 wakeups a second per process.
    """
    from mpevent.tools import bench as _bench

    cost = _bench.idle_cost(processes=2, threads=20, seconds=2.0, kind=kind)
    assert cost["wakeups per second"] <= 2 * 1.0 + 1.0


def test_a_fork_from_another_thread_leaves_the_parents_slots_alone() -> None:
    """Pool and executor helper threads fork: the child must not free our slots."""
    import multiprocessing as mp

    event = mpevent.Event()
    arena = event._record.arena
    event.wait(0.001)  # this thread now holds a slot
    slot = _parking.slot_for(arena)
    exitcodes: list[int | None] = []

    def fork_from_here() -> None:
        child = mp.get_context("fork").Process(target=os.getpid, daemon=True)
        child.start()
        child.join(30)
        if child.is_alive():
            child.kill()
        exitcodes.append(child.exitcode)

    thread = threading.Thread(target=fork_from_here)
    thread.start()
    thread.join(60)
    assert exitcodes == [0]
    assert (slot, arena.entry, arena.epoch) in arena.native.slot_owners()
    assert event.wait(0.001) is False  # the slot still works
