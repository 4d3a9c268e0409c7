"""Model-based test: random operations from several processes agree with a model.

Hypothesis drives an Event and an AsyncResult through random sequences of
operations, each run by a randomly chosen process (this one or one of two
forked helpers), and checks every observation against a plain in-process
model of gevent's semantics.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from typing import Any

import pytest

# Not installable everywhere CI runs (the free-threaded build): skip, saying so.
pytest.importorskip("hypothesis", reason="hypothesis is not installed here")

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

import mpevent

_NOTHING = object()


def _apply(event: mpevent.Event, result: mpevent.AsyncResult, operation: str, arg: Any) -> Any:
    """Run one operation and describe what a user observes."""
    try:
        if operation == "event_set":
            return event.set()
        if operation == "event_clear":
            return event.clear()
        if operation == "event_is_set":
            return event.is_set()
        if operation == "event_wait0":
            return event.wait(0)
        if operation == "result_set":
            return result.set(arg)
        if operation == "result_set_exception":
            return result.set_exception(KeyError(arg))
        if operation == "result_get_nowait":
            return ("value", result.get_nowait())
        if operation == "result_ready":
            return result.ready()
        if operation == "result_successful":
            return result.successful()
        if operation == "result_value":
            return result.value
    except mpevent.Timeout:
        return ("raised", "Timeout")
    except KeyError as exc:
        return ("raised", "KeyError", exc.args)
    raise AssertionError(f"unknown operation {operation}")


def _serve(connection: Any, event: mpevent.Event, result: mpevent.AsyncResult) -> None:
    while True:
        request = connection.recv()
        if request is None:
            return
        connection.send(_apply(event, result, *request))


class SharedObjectsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.event, self.result = mpevent.Event(), mpevent.AsyncResult()
        self.flag = False
        self.value: Any = _NOTHING
        self.exception_arg: Any = _NOTHING
        context = mp.get_context("fork")
        self.helpers = []
        for _ in range(2):
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, self.event, self.result))
            process.start()
            theirs.close()
            self.helpers.append((process, mine))

    def _run(self, where: int, operation: str, arg: Any = None) -> Any:
        if where == 0:
            return _apply(self.event, self.result, operation, arg)
        _, connection = self.helpers[where - 1]
        connection.send((operation, arg))
        assert connection.poll(30), f"helper {where} did not answer {operation}"
        return connection.recv()

    # --- Event --------------------------------------------------------

    @rule(where=st.integers(0, 2))
    def event_set(self, where: int) -> None:
        self._run(where, "event_set")
        self.flag = True

    @rule(where=st.integers(0, 2))
    def event_clear(self, where: int) -> None:
        self._run(where, "event_clear")
        self.flag = False

    @rule(where=st.integers(0, 2), operation=st.sampled_from(["event_is_set", "event_wait0"]))
    def event_observe(self, where: int, operation: str) -> None:
        assert self._run(where, operation) is self.flag

    # --- AsyncResult ----------------------------------------------------

    @rule(
        where=st.integers(0, 2), value=st.one_of(st.none(), st.integers(), st.binary(max_size=300))
    )
    def result_set(self, where: int, value: Any) -> None:
        self._run(where, "result_set", value)
        self.value = value

    @rule(where=st.integers(0, 2), arg=st.integers(0, 9))
    def result_set_exception(self, where: int, arg: int) -> None:
        self._run(where, "result_set_exception", arg)
        self.exception_arg = arg

    @rule(where=st.integers(0, 2))
    def result_get_nowait(self, where: int) -> None:
        if self.value is not _NOTHING:
            expected: Any = ("value", self.value)
        elif self.exception_arg is not _NOTHING:
            expected = ("raised", "KeyError", (self.exception_arg,))
        else:
            expected = ("raised", "Timeout")
        assert self._run(where, "result_get_nowait") == expected

    @rule(where=st.integers(0, 2))
    def result_flags(self, where: int) -> None:
        ready = self.value is not _NOTHING or self.exception_arg is not _NOTHING
        assert self._run(where, "result_ready") is ready
        assert self._run(where, "result_successful") is (self.value is not _NOTHING)

    @precondition(lambda self: self.value is not _NOTHING)
    @rule(where=st.integers(0, 2))
    def result_value(self, where: int) -> None:
        assert self._run(where, "result_value") == self.value

    def teardown(self) -> None:
        for process, connection in self.helpers:
            with contextlib.suppress(OSError):  # a helper that died already
                connection.send(None)
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
            connection.close()


SharedObjectsMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestSharedObjects = SharedObjectsMachine.TestCase
