"""Differential tests: mpevent.AsyncResult observed side by side with gevent's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Not installable everywhere CI runs (the free-threaded build): skip, saying so.
pytest.importorskip("gevent", reason="gevent is not installed here")
pytest.importorskip("hypothesis", reason="hypothesis is not installed here")

import gevent
import gevent.event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mpevent

VALUES = st.one_of(
    st.none(), st.integers(-5, 5), st.text(max_size=5), st.lists(st.integers(), max_size=3)
)
EXCEPTIONS = st.sampled_from([ValueError, KeyError, RuntimeError]).flatmap(
    lambda kind: st.integers(0, 3).map(lambda n: kind(n))
)
OPERATIONS = st.one_of(
    st.tuples(st.just("set"), VALUES),
    st.tuples(st.just("set_exception"), EXCEPTIONS),
    st.sampled_from(
        [
            ("get_nowait",),
            ("get_block_false",),
            ("get_timeout",),
            ("ready",),
            ("successful",),
            ("value",),
            ("exception",),
            ("exc_info_type",),
            ("wait0",),
        ]
    ),
)


def _describe(thing: Any) -> Any:
    """What a user can compare across the two: exceptions by type and args."""
    if isinstance(thing, BaseException):
        if isinstance(thing, (gevent.Timeout, mpevent.Timeout)):
            return ("Timeout",)
        return (type(thing).__name__, thing.args)
    return thing


def _observe(result: Any, operation: tuple[Any, ...]) -> Any:
    name = operation[0]
    try:
        if name == "set":
            return result.set(operation[1])
        if name == "set_exception":
            return result.set_exception(operation[1])
        if name == "get_nowait":
            return _describe(result.get_nowait())
        if name == "get_block_false":
            return _describe(result.get(block=False))
        if name == "get_timeout":
            return _describe(result.get(timeout=0.001))
        if name == "ready":
            return bool(result.ready())
        if name == "successful":
            return bool(result.successful())
        if name == "value":
            return _describe(result.value)
        if name == "exception":
            return _describe(result.exception)
        if name == "exc_info_type":
            info = result.exc_info
            return info[0].__name__ if info else ()
        if name == "wait0":
            return _describe(result.wait(0))
    except BaseException as exc:  # gevent.Timeout is a BaseException
        return ("raised", _describe(exc))
    raise AssertionError(f"unknown operation {name}")


@pytest.fixture(scope="module", autouse=True)
def gevent_hub() -> Iterator[None]:
    yield
    gevent.get_hub().destroy(destroy_loop=True)  # its loop holds descriptors


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=12))
def test_same_observations_as_gevent(operations: list[tuple[Any, ...]]) -> None:
    ours, theirs = mpevent.AsyncResult(), gevent.event.AsyncResult()
    for operation in operations:
        assert _observe(ours, operation) == _observe(theirs, operation), operation


@pytest.mark.parametrize(
    "operations",
    [
        [("set", 1), ("set", 2), ("get_nowait",)],
        [("set", 1), ("set_exception", ValueError(1)), ("get_nowait",), ("exception",)],
        [("set_exception", ValueError(1)), ("set", 3), ("successful",), ("get_nowait",)],
        [("set_exception", KeyError(1)), ("wait0",), ("value",), ("exc_info_type",)],
        [("get_timeout",), ("get_nowait",), ("wait0",), ("ready",)],
    ],
    ids=["set-twice", "set-then-exception", "exception-then-set", "wait-on-exception", "empty"],
)
def test_vague_corners_match_gevent(operations: list[tuple[Any, ...]]) -> None:
    ours, theirs = mpevent.AsyncResult(), gevent.event.AsyncResult()
    observed = [(_observe(ours, op), _observe(theirs, op)) for op in operations]
    assert [a for a, _ in observed] == [b for _, b in observed]
