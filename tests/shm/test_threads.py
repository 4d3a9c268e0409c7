"""Many threads of one process on the same objects at once, GIL or no GIL.

On a free-threaded build (3.13t, 3.14t) the threads below run in parallel,
and ``import mpevent`` must leave the GIL off (the extension declares
``Py_MOD_GIL_NOT_USED``); on a GIL build they take turns, and the same
invariants must hold.  Each test joins its threads with a timeout: a lost
wakeup or a deadlock fails it.
"""

from __future__ import annotations

import sys
import sysconfig
import threading
import time
from collections.abc import Callable

import pytest

import mpevent

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _run_all(bodies: list[Callable[[], None]], timeout: float = 60) -> None:
    """Run each body in a thread of its own; re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:  # reported below
                failures.append(exc)

        return run

    threads = [threading.Thread(target=guarded(body)) for body in bodies]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads stuck (a lost wakeup or a deadlock): {stuck}"
    if failures:
        raise failures[0]


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded build only (3.13t, 3.14t)")
def test_importing_mpevent_leaves_the_gil_off() -> None:
    assert not sys._is_gil_enabled()  # type: ignore[attr-defined]


def test_a_token_ring_of_threads_loses_no_wakeup() -> None:
    # Thread i waits on events[i], clears it and sets events[i + 1]: any
    # lost wakeup stops the ring and the join times out.
    count, rounds = 8, 500
    events = [mpevent.Event() for _ in range(count)]

    def member(i: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(rounds):
                assert events[i].wait(30), f"member {i} was never woken"
                events[i].clear()
                events[(i + 1) % count].set()

        return run

    events[0].set()
    _run_all([member(i) for i in range(count)])


def test_readers_setters_and_linkers_share_results() -> None:
    # Setters publish ever larger values in a result while readers get()
    # them (each value whole: its length names its content), linkers
    # rawlink callbacks and waiters wait on several at once.
    results = [mpevent.AsyncResult() for _ in range(4)]
    stop = threading.Event()
    called: list[int] = []
    called_lock = threading.Lock()

    def setter(result: mpevent.AsyncResult, seed: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(1, 300):
                size = (seed * 997 + n * 131) % 70_000 + 1
                result.set(bytes([size % 251]) * size)
            stop.set()

        return run

    def reader(result: mpevent.AsyncResult) -> Callable[[], None]:
        def run() -> None:
            while not stop.is_set():
                value = result.get(timeout=30)
                assert value == bytes([len(value) % 251]) * len(value), "a torn value"

        return run

    def linker(result: mpevent.AsyncResult) -> Callable[[], None]:
        def run() -> None:
            def on_set(_: object) -> None:
                with called_lock:
                    called.append(1)

            while not stop.is_set():
                result.rawlink(on_set)
                result.unlink(on_set)

        return run

    def multi_waiter() -> None:
        while not stop.is_set():
            assert mpevent.wait(results, timeout=30, count=1)

    bodies: list[Callable[[], None]] = []
    for i, result in enumerate(results):
        bodies += [setter(result, i), reader(result), linker(result)]
    bodies.append(multi_waiter)
    _run_all(bodies)
    assert all(result.ready() for result in results)


def test_closing_a_handle_while_other_threads_use_it_is_an_error_not_a_crash() -> None:
    # close() races with set(), is_set() and wait() in other threads: each
    # call either works or raises ValueError ("closed").
    for _ in range(20):
        event = mpevent.Event()
        go = threading.Event()
        outcomes: list[str] = []

        def user(
            event: mpevent.Event = event, go: threading.Event = go, outcomes: list[str] = outcomes
        ) -> None:
            go.wait(10)
            for _ in range(200):
                try:
                    event.set()
                    event.is_set()
                    event.wait(0.001)
                    event.clear()
                except ValueError as exc:
                    assert "closed" in str(exc)
                    outcomes.append("closed")
                    return
            outcomes.append("done")

        def closer(event: mpevent.Event = event, go: threading.Event = go) -> None:
            go.wait(10)
            event.close()

        threads = [user, user, user, closer]
        go.set()
        _run_all(threads)
        assert len(outcomes) == 3
