"""Interleavings that broke a protocol once, forced on the real code.

Each test stops a thread at a named test point of the C code
(``src/native/testpoints.c``), runs another party while it is stopped, and
lets it go on: the bad interleaving happens every run, not by luck.  Test
points exist only in builds with ``-DMPEVENT_TEST_POINTS`` (CI's sanitizer
and ThreadSanitizer stages, ``.ci/sanitize`` and ``.ci/tsan``); elsewhere
these tests skip and say so.

Each test failed on the code before its fix (ea82a5d, with the same test
points added), as its docstring says, and passes now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _native

pytestmark = pytest.mark.skipif(
    not _native.testing_points(),
    reason="the extension was built without -DMPEVENT_TEST_POINTS (CI's sanitizer stages have it)",
)

STOPPED_WITHIN = 10.0  # seconds for a thread to reach its test point
ENDED_WITHIN = 5.0  # seconds for a party to finish once nothing holds it


class _Party:
    """A thread running `body`, keeping its result or exception."""

    def __init__(self, body: Callable[[], Any]) -> None:
        self.outcome: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.outcome = body()
            except BaseException as exc:  # reported by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def ended(self, timeout: float = ENDED_WITHIN) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@pytest.fixture
def points() -> Iterator[Callable[[str], None]]:
    """arm(name); every point armed here is released at the end."""
    armed: list[str] = []

    def arm(name: str) -> None:
        _native.testing_point_arm(name)
        armed.append(name)

    yield arm
    for name in armed:
        with contextlib.suppress(RuntimeError):  # released by the test already
            _native.testing_point_release(name)


def _release(name: str) -> None:
    _native.testing_point_release(name)


def _claim_on_go_then_die(result: mpevent.AsyncResult, go: mpevent.Event) -> None:
    go.wait(30)
    result.claim()
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_watch_handed_over_reaches_a_waiter_about_to_sleep(
    points: Callable[[str], None], processes: ProcessRunner
) -> None:
    """Finding 2: the watch is handed to a waiter between "I do not watch"
    and its untimed sleep; a claimer then dies.  Before the fix the hand-over
    was a bare futex wake on a word still 0, lost, and the waiter slept
    forever with no watcher: ``get()`` never ended.
    """
    first, result, go = mpevent.Event(), mpevent.AsyncResult(), mpevent.Event()
    claimer = processes.start(_claim_on_go_then_die, result, go)

    points("park-watching")
    watcher = _Party(lambda: first.wait())
    assert _native.testing_point_reached("park-watching", STOPPED_WITHIN)
    _release("park-watching")  # the first waiter holds the watch and sleeps

    points("park-not-watching")
    waiter = _Party(lambda: result.get())
    assert _native.testing_point_reached("park-not-watching", STOPPED_WITHIN)
    first.set()  # the watcher leaves and hands the watch to the stopped waiter
    assert watcher.ended() and watcher.outcome is True
    _release("park-not-watching")  # it now sleeps, untimed unless it watches

    go.set()
    assert processes.join(claimer) == -signal.SIGKILL
    try:
        assert waiter.ended(), "get() never ended: the watch hand-over was lost"
        assert isinstance(waiter.error, mpevent.ProcessDied)
        assert waiter.error.pid == claimer.pid
    finally:
        if waiter.thread.is_alive():
            result._record.native.set(result._record.index)  # let the stuck thread go
            waiter.ended()


def _claim_then_die(result: mpevent.AsyncResult) -> None:
    result.claim()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_claim_taken_again_after_its_claimer_died_is_not_failed(
    points: Callable[[str], None], processes: ProcessRunner
) -> None:
    """Finding 3: a waiter finds the claimer dead, and before it fails the
    claim, this process claims the result again (the retry after a worker
    died).  Before the fix the waiter failed the live claim: ``get()``
    raised ProcessDied naming this live process.
    """
    result = mpevent.AsyncResult()
    assert processes.join(processes.start(_claim_then_die, result)) == -signal.SIGKILL

    points("fail-claim")
    waiter = _Party(lambda: result.get(timeout=30))
    assert _native.testing_point_reached("fail-claim", STOPPED_WITHIN)
    result.claim()  # the dead claimer's claim, taken over by a live process
    points("park-watching")  # where the waiter goes next if it fails nothing
    _release("fail-claim")
    parked = False
    while not parked and waiter.thread.is_alive():
        parked = _native.testing_point_reached("park-watching", 0.05)
    assert waiter.error is None, f"a live claim was failed: {waiter.error!r}"
    assert parked
    _release("park-watching")
    result.set(42)
    assert waiter.ended()
    assert waiter.error is None and waiter.outcome == 42


MiB = 1 << 20
GONE, WRITER = 1000, 1001  # attach entries the test writes blocks for (no process joins that many)


def test_a_block_reused_by_a_live_writer_is_not_freed_for_its_old_writer(
    points: Callable[[str], None],
) -> None:
    """Finding 5: a block once written by a process that is now gone is
    taken by a live writer while heap_forget walks the gone process's
    blocks.  Before the fix heap_forget judged the block by its stale
    ``owner`` and then took it WRITING -> FREEING: the live writer's block
    was freed under it, and handed out again.
    """
    native = mpevent.AsyncResult()._record.native
    used = native.heap_statistics()["large_used"]
    block = native.block_alloc(MiB, GONE)
    native.heap_forget(GONE)  # the gone writer's block is free again

    points("forget-block")
    forgetter = _Party(lambda: native.heap_forget(GONE))
    assert _native.testing_point_reached("forget-block", STOPPED_WITHIN)
    reused = native.block_alloc(MiB, WRITER)
    _release("forget-block")
    try:
        assert forgetter.ended() and forgetter.error is None
        assert reused == block  # the free list is LIFO: the same block
        taken = native.heap_statistics()["large_used"] - used
        assert taken > 0, "the live writer's block was freed under it"
        other = native.block_alloc(MiB, WRITER)
        assert other != reused, "one block handed to two writers"
    finally:
        native.heap_forget(WRITER)
    assert native.heap_statistics()["large_used"] == used
