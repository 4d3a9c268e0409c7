"""Faults: processes SIGKILLed at random points must not hurt the survivors."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _native

SIZES = [1, 200, 5000, 100_000]  # inline, heap, heap, segment


def _hammer(event: mpevent.Event, result: mpevent.AsyncResult, started: mpevent.Event) -> None:
    started.set()
    n = 0
    while True:
        event.set()
        event.clear()
        event.wait(0.0005)
        n += 1
        result.set((n, bytes([n % 256]) * SIZES[n % len(SIZES)]))
        if n % 3 == 0:
            result.set_exception(KeyError(n))


def _wait_for(event: mpevent.Event, woke: mpevent.Event) -> None:
    while True:
        if event.wait(30):
            woke.set()
            return


def _check_value(result: mpevent.AsyncResult) -> None:
    """A value seen after the kill is one the loop wrote, whole."""
    if not result.ready():
        return
    if result.successful():
        n, blob = result.get()
        assert blob == bytes([n % 256]) * SIZES[n % len(SIZES)]
    else:
        assert isinstance(result.exception, KeyError)


def _one_kill(processes: ProcessRunner, rng: random.Random) -> float:
    event, result = mpevent.Event(), mpevent.AsyncResult()
    started, woke = mpevent.Event(), mpevent.Event()
    guard = mpevent.Event()
    waiter = processes.start(_wait_for, guard, woke)
    worker = processes.start(_hammer, event, result, started)
    assert started.wait(30)
    time.sleep(rng.uniform(0.001, 0.03))  # a random point of the loop
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(10)
    begin = time.monotonic()
    _check_value(result)
    result.set(("final", b"x" * 70_000))
    assert result.get(timeout=2) == ("final", b"x" * 70_000)
    event.set()
    assert event.wait(0)
    event.clear()
    assert event.wait(0.01) is False
    assert event._record.native.record_info(event._record.index)["waiters"] == 0
    guard.set()
    assert woke.wait(2)
    elapsed = time.monotonic() - begin
    assert processes.join(waiter, timeout=5) == 0
    return elapsed


def _kill_runs(processes: ProcessRunner, runs: int, seed: int) -> None:
    rng = random.Random(seed)
    arena = mpevent.Event()._record.arena
    recoveries = arena.native.statistics()["recoveries"]
    times = [_one_kill(processes, rng) for _ in range(runs)]
    recovered = arena.native.statistics()["recoveries"] - recoveries
    print(
        f"{runs} kills: 0 deadlocks, 0 corruptions, {recovered} locks taken over from "
        f"the dead, slowest recovery {max(times) * 1e3:.1f} ms"
    )
    assert max(times) < 2.0


def test_kill_at_random_points_100_runs(processes: ProcessRunner) -> None:
    _kill_runs(processes, 100, seed=20261125)


@pytest.mark.stress
def test_kill_at_random_points_1000_runs(processes: ProcessRunner) -> None:
    _kill_runs(processes, 1000, seed=1125)


def _park_forever(event: mpevent.Event, parked: mpevent.Event) -> None:
    parked.set()
    event.wait()


def test_dead_waiter_leaves_no_stale_registration(processes: ProcessRunner) -> None:
    event, parked = mpevent.Event(), mpevent.Event()
    child = processes.start(_park_forever, event, parked)
    assert parked.wait(30)
    native, index = event._record.native, event._record.index
    deadline = time.monotonic() + 10
    while native.record_info(index)["waiters"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    event.set()  # wakes (and drops) the dead waiter's registration
    assert native.record_info(index)["waiters"] == 0
    event.clear()
    assert event.wait(0.01) is False
    event.set()
    assert event.wait(0)


def _hold_record_lock_and_die(event: mpevent.Event) -> None:
    _native.testing_record_lock(event._record.native, event._record.index)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_record_lock_of_a_killed_holder_is_taken_over(
    processes: ProcessRunner, method: str
) -> None:
    event = mpevent.Event()
    native = event._record.native
    recoveries = native.statistics()["recoveries"]
    child = processes.start(_hold_record_lock_and_die, event, method=method)
    processes.join(child)
    assert child.exitcode == -signal.SIGKILL
    begin = time.monotonic()
    event.set()
    assert event.wait(0)
    event.clear()
    assert time.monotonic() - begin < 2
    assert native.statistics()["recoveries"] == recoveries + 1


def _create_and_hand_over(connection: Any) -> None:
    event, result = mpevent.Event(), mpevent.AsyncResult()
    result.set(b"made by the creator" * 5000)
    connection.send((event, result))
    connection.recv()  # stay alive until killed


def test_others_keep_working_when_the_arena_creator_dies(processes: ProcessRunner) -> None:
    import multiprocessing as mp

    mine, theirs = mp.get_context("spawn").Pipe()
    creator = processes.start(_create_and_hand_over, theirs, method="spawn")
    assert mine.poll(60)
    event, result = mine.recv()
    creator_arena = event._record.arena.name
    assert creator_arena.startswith(f"mpevent-{creator.pid}-")
    os.kill(creator.pid, signal.SIGKILL)
    creator.join(10)
    assert result.get(timeout=2) == b"made by the creator" * 5000
    event.set()
    assert event.wait(0)
    fresh = mpevent.AsyncResult()
    fresh.set("still fine")
    assert fresh.get() == "still fine"
    mine.close()


SLOT_RECLAIM_PROGRAM = """
import os, signal, time, mpevent
event, parked = mpevent.Event(), mpevent.Event()
for n in range(12):
    pid = os.fork()
    if pid == 0:
        try:
            if n % 2:
                parked.set()
                event.wait()  # killed while parked: its link stays queued
            event.wait(0.001)
        except BaseException:
            os._exit(1)
        os._exit(0)  # leaves without giving its slot back
    if n % 2:
        assert parked.wait(30)
        while event._record.info()["waiters"] == 0:
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        parked.clear()
    _, status = os.waitpid(pid, 0)
    assert n % 2 or status == 0, f"child {n} failed to get a slot"
stats = event._record.arena.native.statistics()
assert stats["slots_live"] <= 4, stats
assert event.wait(0.001) is False  # this process still gets a slot
event.set()
assert event._record.info()["waiters"] == 0
print("ok", stats["slots_live"])
"""


def test_slots_of_dead_processes_are_reclaimed_when_slots_run_out() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", SLOT_RECLAIM_PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPEVENT_ARENA_SLOTS": "4"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_references_of_dead_processes_are_given_back() -> None:
    import gc

    result = mpevent.AsyncResult()
    result.set(b"r" * (1 << 20))
    record = result._record
    arena, index = record.arena, record.index
    children = []
    gate_read, gate_write = os.pipe()
    for _ in range(2):  # each inherits a reference and dies without returning it
        pid = os.fork()
        if pid == 0:
            os.close(gate_write)
            os.read(gate_read, 1)  # all alive until both exist: nobody reclaims early
            os._exit(0)
        children.append(pid)
    os.close(gate_read)
    os.close(gate_write)
    for pid in children:
        os.waitpid(pid, 0)
    assert record.info()["refcount"] == 3
    del result, record
    gc.collect()
    assert arena.native.record_info(index)["refcount"] == 2  # only the dead hold it
    assert arena.reclaim_dead_processes() >= 2  # ours, and any other dead entry
    assert arena.native.record_info(index)["kind"] == 0  # freed, value storage too


def _half_set_and_die(event: mpevent.Event, go: mpevent.Event) -> None:
    go.wait(30)
    _native.testing_record_half_set(event._record.native, event._record.index)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("waiters", [("wait", "many", "hub"), ("many",), ("hub",)])
def test_waiters_return_when_a_setter_dies_before_waking_them(
    processes: ProcessRunner, waiters: tuple[str, ...]
) -> None:
    """Alone, each kind of waiter finds the published flag by itself.

    (Together, the first to notice takes the dead setter's lock over and
    finishes its wakeups for all.)
    """
    import threading

    event, go, other = mpevent.Event(), mpevent.Event(), mpevent.Event()
    outcomes: dict[str, object] = {}
    called = threading.Event()

    def single() -> None:
        outcomes["wait"] = event.wait(10)

    def many() -> None:
        outcomes["many"] = mpevent.wait([other, event], timeout=10, count=1) == [event]

    threads = []
    if "hub" in waiters:
        event.rawlink(lambda _obj: called.set())
    if "wait" in waiters:
        threads.append(threading.Thread(target=single))
    if "many" in waiters:
        threads.append(threading.Thread(target=many))
    for thread in threads:
        thread.start()
    while event._record.info()["waiters"] < len(waiters):
        time.sleep(0.001)
    child = processes.start(_half_set_and_die, event, go)
    begin = time.monotonic()
    go.set()
    for thread in threads:
        thread.join(10)
    if "hub" in waiters:
        assert called.wait(10)
    assert time.monotonic() - begin < 2.5
    assert outcomes == {name: True for name in waiters if name != "hub"}
    processes.join(child)
    assert child.exitcode == -signal.SIGKILL
    event.clear()  # the next locker takes the dead setter's lock over
    assert not event.is_set()


FULL_TABLES_PROGRAM = """
import threading, mpevent
from mpevent.shm import _arena, _native

# Records: a full arena is not an error, the next object goes to a new one.
events = [mpevent.Event() for _ in range(700)]
assert len(_arena.attached()) == 2, _arena.attached()

# Waiter slots: one per waiting thread; the one too many is told, as MemoryError.
gate = mpevent.Event()
errors = []
def waiter():
    try:
        gate.wait(30)
    except MemoryError as exc:
        errors.append(exc)
threads = [threading.Thread(target=waiter) for _ in range(3)]
for t in threads:
    t.start()
while gate._record.info()["waiters"] + len(errors) < 3:
    pass
gate.set()
for t in threads:
    t.join(30)
assert len(errors) == 1 and isinstance(errors[0], _native.Full), errors
print("ok", errors[0])
"""


def test_every_full_table_is_reported_one_way() -> None:
    """Records overflow into a new arena; slots, links and entries raise _native.Full."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FULL_TABLES_PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPEVENT_ARENA_RECORDS": "600", "MPEVENT_ARENA_SLOTS": "2"},
    )
    assert done.returncode == 0, done.stderr
    assert "all 2 waiter slots of the arena are in use" in done.stdout
