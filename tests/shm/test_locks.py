"""Lock words: a dead holder's lock is taken over once, a stopped one never (src/native/locks.c)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _arena, _native, _segment

pytestmark = pytest.mark.timeout(60)


def _lock_and_hold(event: mpevent.Event, locked: Any) -> None:
    _native.testing_record_lock(event._record.native, event._record.index)
    locked.send(True)
    locked.recv()  # held until killed


def _set_it(event: mpevent.Event, go: mpevent.Event, done: mpevent.Event) -> None:
    go.wait()
    event.set()  # takes the record's lock: sleeps on it while it is held
    done.set()


def _locked_by_a_child(processes: ProcessRunner, event: mpevent.Event) -> tuple[Any, Any]:
    import multiprocessing as mp

    mine, theirs = mp.Pipe()
    holder = processes.start(_lock_and_hold, event, theirs)
    assert mine.poll(30), "the holder never took the lock"
    assert mine.recv()
    return holder, mine


def _sleepers_on(event: mpevent.Event) -> bool:
    word = event._record.native.lock_word(event._record.index)
    return bool(word & _native.LOCK_WAITERS)


def test_a_lock_word_names_its_holder_and_is_free_after(processes: ProcessRunner) -> None:
    event = mpevent.Event()
    native, index = event._record.native, event._record.index
    assert native.lock_label() != 0
    assert native.lock_word(index) == 0
    holder, pipe = _locked_by_a_child(processes, event)
    held = native.lock_word(index) & ~_native.LOCK_WAITERS
    assert held not in (0, native.lock_label())  # the child's own label
    os.kill(holder.pid, signal.SIGKILL)
    processes.join(holder)
    event.set()  # takes the dead child's lock over
    assert event.is_set()
    assert native.lock_word(index) == 0
    pipe.close()


def test_a_holder_killed_while_two_wait_is_repaired_exactly_once(
    processes: ProcessRunner,
) -> None:
    event, go = mpevent.Event(), mpevent.Event()
    native = event._record.native
    done = [mpevent.Event(), mpevent.Event()]
    # Handed over before the lock is held: pickling a handle (and forking)
    # takes its record's lock, so it would wait for the holder too.
    setters = [processes.start(_set_it, event, go, d, method="spawn") for d in done]
    holder, pipe = _locked_by_a_child(processes, event)
    go.set()
    deadline = time.monotonic() + 30
    while not _sleepers_on(event):
        assert time.monotonic() < deadline, "nobody slept on the held lock"
        time.sleep(0.001)
    assert not any(d.is_set() for d in done)
    recoveries = native.statistics()["recoveries"]
    os.kill(holder.pid, signal.SIGKILL)
    processes.join(holder)
    for setter, d in zip(setters, done, strict=True):
        assert d.wait(10), "a setter was left asleep on a dead holder's lock"
        assert processes.join(setter) == 0
    assert event.is_set()
    # Both setters may find the holder dead; one compare-and-swap decides.
    assert native.statistics()["recoveries"] == recoveries + 1
    assert native.lock_word(event._record.index) == 0
    pipe.close()


def test_a_stopped_holder_is_never_taken_for_dead(processes: ProcessRunner) -> None:
    event = mpevent.Event()
    native = event._record.native
    holder, pipe = _locked_by_a_child(processes, event)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        recoveries = native.statistics()["recoveries"]
        done = threading.Event()
        thread = threading.Thread(target=lambda: (event.set(), done.set()), daemon=True)
        thread.start()
        # Ten of the sleeper's liveness checks: each must find it alive.
        assert not done.wait(10 * _native.LOCK_CHECK_MS / 1000)
        assert native.statistics()["recoveries"] == recoveries
        assert native.lock_word(event._record.index) & ~_native.LOCK_WAITERS != native.lock_label()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
    processes.join(holder)
    assert done.wait(10)
    thread.join(10)
    assert native.statistics()["recoveries"] == recoveries + 1
    pipe.close()


def _patched_header(arena: _arena.Arena, offset: int, value: int) -> int:
    view = arena.view[offset : offset + 4].cast("I")
    old = view[0]
    view[0] = value
    return int(old)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (_native.HEADER_PAGE_SIZE, 16384, "16384-byte pages"),
        (_native.HEADER_LAYOUT_VERSION, _native.LAYOUT_VERSION + 1, "another mpevent version"),
    ],
)
def test_an_arena_of_another_page_size_or_layout_is_refused(
    field: int, value: int, message: str
) -> None:
    event = mpevent.Event()
    arena = event._record.arena
    old = _patched_header(arena, field, value)
    try:
        fd, size = _segment.open_existing(arena.name)
        try:
            native = _native.Arena(fd, size)
            with pytest.raises(ValueError, match=message):
                native.validate()
        finally:
            os.close(fd)
    finally:
        _patched_header(arena, field, old)
    event.set()
    assert event.is_set()


def test_the_page_size_is_the_machines() -> None:
    assert os.sysconf("SC_PAGESIZE") == _native.PAGE
    assert _native.BLOCK_HEADER == _native.PAGE
