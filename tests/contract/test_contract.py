"""The contract every backend keeps: the same tests on shared memory, Redis and a Redis Cluster.

Each test gets a backend from ``mpevent.connect()`` and uses only its
``Event``, ``AsyncResult``, ``wait`` and ``iwait`` and the objects' public
methods.  Where Redis must differ, tests say so (see test_redis.py).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CONTRACT_AUTHKEY

import mpevent

AUTHKEY = CONTRACT_AUTHKEY


def _set_later(obj: Any, seconds: float = 0.05) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), obj.set()))
    thread.start()
    return thread


# --- Event ---------------------------------------------------------------------


def test_objects_of_every_backend_are_instances_of_the_public_classes(backend: Any) -> None:
    event, result = backend.Event(), backend.AsyncResult()
    assert isinstance(event, mpevent.Event) and not isinstance(event, mpevent.AsyncResult)
    assert isinstance(result, mpevent.AsyncResult) and not isinstance(result, mpevent.Event)
    assert repr(event).startswith("<mpevent.Event at 0x") and repr(event).endswith("unset>")
    assert type(pickle.loads(pickle.dumps(result))) is type(result)


def test_event_starts_unset_and_follows_set_and_clear(backend: Any) -> None:
    event = backend.Event()
    assert not event.is_set() and not event.isSet()
    event.set()
    assert event.is_set() and event.wait(0) is True
    event.clear()
    assert not event.is_set()
    assert event.wait(0.01) is False


def test_event_wait_returns_true_when_another_thread_sets_it(backend: Any) -> None:
    event = backend.Event()
    setter = _set_later(event)
    assert event.wait(10) is True
    setter.join(10)


def test_a_waiter_returns_true_even_if_clear_follows_set_at_once(backend: Any) -> None:
    event = backend.Event()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(event.wait(10)))
    waiter.start()
    time.sleep(0.2)  # the waiter is registered (no event to wait on for that)
    event.set()
    event.clear()
    waiter.join(10)
    assert results == [True]


def test_bad_timeouts_are_refused(backend: Any) -> None:
    event = backend.Event()
    with pytest.raises(TypeError):
        event.wait("soon")
    with pytest.raises(ValueError):
        event.wait(float("nan"))
    assert event.wait(-1) is False


# --- AsyncResult -----------------------------------------------------------------


def test_async_result_holds_a_value(backend: Any) -> None:
    result = backend.AsyncResult()
    assert not result.ready() and result.value is None
    with pytest.raises(mpevent.Timeout):
        result.get_nowait()
    result.set({"answer": 42, "blob": b"x" * 100_000})
    assert result.ready() and result.successful()
    assert result.get()["answer"] == 42 and result.value["blob"] == b"x" * 100_000


def test_async_result_raises_its_exception(backend: Any) -> None:
    result = backend.AsyncResult()
    result.set_exception(RuntimeError("failure"))
    assert result.ready() and not result.successful()
    with pytest.raises(RuntimeError, match="failure"):
        result.get()
    assert isinstance(result.exception, RuntimeError) and result.value is None


def test_async_result_get_times_out_with_timeout(backend: Any) -> None:
    with pytest.raises(mpevent.Timeout):
        backend.AsyncResult().get(timeout=0.05)


def test_async_result_get_wakes_when_set_elsewhere(backend: Any) -> None:
    result = backend.AsyncResult()
    setter = threading.Thread(target=lambda: (time.sleep(0.05), result.set("late")))
    setter.start()
    assert result.get(timeout=10) == "late"
    setter.join(10)


def test_setting_again_replaces_the_value(backend: Any) -> None:
    result = backend.AsyncResult()
    result.set(1)
    result.set(2)
    assert result.get() == 2


def test_numpy_arrays_round_trip(backend: Any) -> None:
    result = backend.AsyncResult()
    array = np.arange(300_000, dtype=np.int32).reshape(600, 500)
    result.set(array)
    got = pickle.loads(pickle.dumps(result)).get()
    assert np.array_equal(got, array) and got.dtype == array.dtype


def test_an_unpicklable_value_changes_nothing(backend: Any) -> None:
    result = backend.AsyncResult()
    result.set("kept")
    with pytest.raises(TypeError, match="cannot be pickled"):
        result.set(threading.Lock())
    assert result.get() == "kept"


# --- callbacks, many objects, asyncio --------------------------------------------


def test_rawlink_runs_once_after_set_and_unlink_stops_it(backend: Any) -> None:
    event, other = backend.Event(), backend.Event()
    calls: list[Any] = []
    done = threading.Event()
    event.rawlink(lambda obj: (calls.append(obj), done.set()))
    skipped: list[Any] = []
    other.rawlink(skipped.append)
    other.unlink(skipped.append)
    event.set()
    other.set()
    assert done.wait(10)
    time.sleep(0.1)  # a second call, if any, would come now
    assert calls == [event] and skipped == []


def test_wait_and_iwait_on_many_objects(backend: Any) -> None:
    first, second, never = backend.Event(), backend.Event(), backend.Event()
    setter = _set_later(second)
    assert backend.wait([first, second, never], timeout=10, count=1) == [second]
    setter.join(10)
    first.set()
    assert list(backend.iwait([never, first, second], timeout=0.05)) == [first, second]


def test_asyncio_waits_without_blocking_the_loop(backend: Any) -> None:
    event, result = backend.Event(), backend.AsyncResult()

    async def main() -> tuple[bool, object]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, event.set)
        loop.call_later(0.05, result.set, "async")
        return await event.wait_async(10), await result.get_async(10)

    assert asyncio.run(main()) == (True, "async")


# --- names -----------------------------------------------------------------------


def test_named_objects_are_created_once_and_opened_by_name(backend: Any) -> None:
    name = f"contract-{os.getpid()}-{time.monotonic_ns()}"
    created = backend.Event(name, create=True)
    with pytest.raises(FileExistsError):
        backend.Event(name, create=True)
    opened = backend.Event(name)
    created.set()
    assert opened.is_set() and opened.name == name
    with pytest.raises(FileNotFoundError):
        backend.Event(name + "-missing")
    created.remove_name()


def test_a_closed_handle_refuses_every_use(backend: Any) -> None:
    event = backend.Event()
    event.close()
    with pytest.raises(ValueError, match="closed"):
        event.is_set()


def test_open_needs_a_name(backend: Any) -> None:
    # None would make a new anonymous object, silently unrelated to any other.
    with pytest.raises(TypeError, match="open\\(\\) needs the name of an existing object"):
        backend.AsyncResult.open(None)
    with pytest.raises(TypeError, match="open\\(\\) needs the name"):
        backend.Event.open(3)


# --- other processes ----------------------------------------------------------------

CHILD = """
import pickle, sys
handles = pickle.loads(bytes.fromhex(sys.stdin.read()))
event, result = handles
result.set(("from another interpreter", event.wait(30)))
"""


def test_a_handle_pickles_into_an_unrelated_interpreter(
    backend: Any, backend_urls: dict[str, str]
) -> None:
    event, result = backend.Event(), backend.AsyncResult()
    payload = pickle.dumps((event, result)).hex()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        env={**os.environ, "MPEVENT_AUTHKEY": AUTHKEY},
        text=True,
        cwd=Path(__file__).parent,
    )
    try:
        assert child.stdin is not None
        child.stdin.write(payload)
        child.stdin.close()
        event.set()
        assert result.get(timeout=60) == ("from another interpreter", True)
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
