"""Event: the threading.Event contract, in one process and many threads."""

from __future__ import annotations

import pickle
import re
import threading
import time

import pytest
from conftest import wait_for_waiters

import mpevent

lock_tests = pytest.importorskip("test.lock_tests", reason="CPython's test package is missing")


class TestCPythonEventSuite(lock_tests.EventTests):  # type: ignore[misc]
    """CPython's own Event tests, run against mpevent.Event."""

    eventtype = mpevent.Event

    def test_at_fork_reinit(self) -> None:
        pytest.skip("private to threading.Event")


def test_new_event_is_clear() -> None:
    assert not mpevent.Event().is_set()


def test_set_clear_and_isSet_alias() -> None:
    event = mpevent.Event()
    event.set()
    assert event.is_set() and event.isSet()
    event.clear()
    assert not event.is_set() and not event.isSet()


def test_wait_returns_flag() -> None:
    event = mpevent.Event()
    assert event.wait(0) is False
    assert event.wait(0.01) is False
    event.set()
    assert event.wait() is True
    assert event.wait(0) is True


def test_negative_timeout_does_not_wait() -> None:
    event = mpevent.Event()
    start = time.monotonic()
    assert event.wait(-5) is False
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("bad", ["1", b"1", [1], object()])
def test_non_number_timeout_is_a_type_error(bad: object) -> None:
    event = mpevent.Event()
    with pytest.raises(TypeError, match="timeout must be a number"):
        event.wait(bad)  # type: ignore[arg-type]
    assert not event.is_set()


def test_nan_timeout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="NaN"):
        mpevent.Event().wait(float("nan"))


def test_repr_names_class_address_and_state() -> None:
    event = mpevent.Event()
    assert re.fullmatch(r"<mpevent\.Event at 0x[0-9a-f]+: unset>", repr(event))
    event.set()
    assert repr(event).endswith(": set>")


def test_pickle_is_a_small_reference_to_the_same_flag() -> None:
    event = mpevent.Event()
    data = pickle.dumps(event)
    assert len(data) < 300
    copy = pickle.loads(data)
    assert copy is not event
    event.set()
    assert copy.is_set()
    copy.clear()
    assert not event.is_set()


def test_set_wakes_all_threads_even_if_cleared_at_once() -> None:
    event = mpevent.Event()
    results: list[bool] = []
    started = threading.Barrier(21)

    def waiter() -> None:
        started.wait()
        results.append(event.wait(30))

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for thread in threads:
        thread.start()
    started.wait()
    wait_for_waiters(event, 20)
    event.set()
    event.clear()
    for thread in threads:
        thread.join(30)
    assert results == [True] * 20


def test_threads_hammering_set_clear_wait() -> None:
    event = mpevent.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def toggler() -> None:
        while not stop.is_set():
            event.set()
            event.clear()

    def waiter() -> None:
        try:
            for _ in range(2000):
                event.wait(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=toggler) for _ in range(2)]
    threads += [threading.Thread(target=waiter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads[2:]:
        thread.join(60)
    stop.set()
    for thread in threads[:2]:
        thread.join(60)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    info = event._record.native.record_info(event._record.index)
    assert info["waiters"] == 0


def test_mpevent_event_makes_a_shared_memory_event() -> None:
    event = mpevent.Event()
    assert type(event) is mpevent.shm.Event and isinstance(event, mpevent.Event)


class Ready(mpevent.shm.Event):
    def announce(self) -> str:
        return "ready" if self.is_set() else "waiting"


def test_subclassing_needs_a_backend_class() -> None:
    class Direct(mpevent.Event):
        pass

    with pytest.raises(TypeError, match=r"derive from mpevent\.shm\.Event"):
        Direct()

    ready = Ready()
    ready.set()
    assert ready.announce() == "ready" and isinstance(ready, mpevent.Event)
    assert pickle.loads(pickle.dumps(ready)).announce() == "ready"
