"""Subinterpreters (3.14's ``concurrent.interpreters``): mpevent imports in
each, and its objects cross interpreters by pickling, as they cross
processes.

Each interpreter has its own copy of the extension's state (types, Full,
the wait path, the block views: ``NativeState`` in ``src/native/arena.h``)
and attaches to an arena as a process of its own would.  These tests run
interpreters with their own GIL, the way ``InterpreterPoolExecutor`` makes
them.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

import pytest
from conftest import ProcessRunner, wait_for_waiters

import mpevent

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="concurrent.interpreters is new in Python 3.14"
)


def test_mpevent_imports_and_works_inside_a_subinterpreter() -> None:
    from concurrent import interpreters  # type: ignore[import-not-found,unused-ignore]

    interpreter = interpreters.create()
    try:
        interpreter.exec(
            "import mpevent\n"
            "event = mpevent.Event()\n"
            "assert not event.wait(0.01)\n"
            "event.set()\n"
            "assert event.wait(1)\n"
            "result = mpevent.AsyncResult()\n"
            "result.set(b'x' * 200_000)\n"  # a large block, read through a view
            "assert result.get() == b'x' * 200_000\n"
            "assert mpevent.wait([event, result], timeout=1) == [event, result]\n"
        )
    finally:
        interpreter.close()
    # The main interpreter's module is untouched by the other's.
    event = mpevent.Event()
    event.set()
    assert event.wait(1)


def test_a_set_wakes_waiters_in_four_other_interpreters() -> None:
    from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined,unused-ignore]

    event = mpevent.Event()
    with InterpreterPoolExecutor(max_workers=4) as pool:
        waiting = [pool.submit(operator.methodcaller("wait", 30), event) for _ in range(4)]
        wait_for_waiters(event, 4, timeout=90)  # emulated (.ci/emulated): slow to start
        assert not any(future.done() for future in waiting)
        event.set()
        assert [future.result(timeout=30) for future in waiting] == [True] * 4


def _get_and_report(result: Any, report: Any) -> None:
    report.set(result.get(timeout=30))


def test_a_result_set_in_another_interpreter_reaches_another_process(
    processes: ProcessRunner,
) -> None:
    from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined,unused-ignore]

    result, report = mpevent.AsyncResult(), mpevent.AsyncResult()
    # The child first, so that no interpreter but this one exists at the fork.
    child = processes.start(_get_and_report, result, report, method="fork")
    wait_for_waiters(result, 1)
    with InterpreterPoolExecutor(max_workers=1) as pool:
        pool.submit(operator.methodcaller("set", {"answer": 42}), result).result(timeout=30)
    assert report.get(timeout=30) == {"answer": 42}
    assert processes.join(child) == 0


def test_an_interpreter_that_closes_leaves_its_arena_entries() -> None:
    from concurrent import interpreters  # type: ignore[import-not-found,unused-ignore]

    event = mpevent.Event()  # the main interpreter attached first
    arena = event._record.native
    before = {entry for entry, *_ in arena.entries()}
    interpreter = interpreters.create()
    try:
        interpreter.call(operator.methodcaller("set"), event)
    finally:
        interpreter.close()
    assert event.is_set()
    assert {entry for entry, *_ in arena.entries()} == before
