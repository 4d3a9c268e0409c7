"""A wait that does not sleep needs no memory, and a read is one C call.

``wait()``, ``get()`` and ``mpevent.wait()`` on objects that are set answer
before a waiter slot is touched (``wait`` and ``wait_any`` in
``src/native/wait.c``): with shared memory full they still work.  Reading
a set result is one call into C (``load`` in ``src/native/records.c``).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

import mpevent
from mpevent.shm import _arena


def _in_fresh_thread(body: Callable[[], Any]) -> Any:
    """Run *body* in a new thread (one with no waiter slot yet); its result."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(body())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the thread is stuck"
    if failure:
        raise failure[0]
    return outcome[0]


@pytest.fixture
def no_slots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every waiter-slot allocation fail, as a full /dev/shm would; the attempts."""
    attempts: list[str] = []

    def refuse(self: _arena.Arena) -> int:
        attempts.append(self.name)
        raise MemoryError("/dev/shm is full (simulated for this test)")

    monkeypatch.setattr(_arena.Arena, "allocate_slot", refuse)
    return attempts


def test_waits_on_set_objects_never_ask_for_a_slot(no_slots: list[str]) -> None:
    event, result = mpevent.Event(), mpevent.AsyncResult()
    event.set()
    result.set([1, 2, 3])

    def waits() -> tuple[Any, ...]:
        return (
            event.wait(1),
            event.wait(),
            result.get(timeout=1),
            result.wait(1),
            len(mpevent.wait([event, result], timeout=1)),
            len(mpevent.wait([event, result], timeout=1, count=1)),
            len(list(mpevent.iwait([event, result], timeout=1))),
        )

    assert _in_fresh_thread(waits) == (True, True, [1, 2, 3], [1, 2, 3], 2, 1, 2)
    assert no_slots == []


def test_a_wait_that_must_sleep_asks_for_a_slot_and_says_why(no_slots: list[str]) -> None:
    unset = mpevent.Event()
    with pytest.raises(MemoryError, match="simulated"):
        _in_fresh_thread(lambda: unset.wait(0.01))
    with pytest.raises(MemoryError, match="simulated"):
        _in_fresh_thread(lambda: mpevent.wait([unset, mpevent.Event()], timeout=0.01))
    assert len(no_slots) == 2


class _Counting:
    """Stands in for an arena's C object and counts the calls made to it."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.native, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any) -> Any:
            self.calls.append(name)
            return attribute(*args)

        return counted


@pytest.mark.parametrize(
    "value",
    [7, "x" * 1000, b"y" * 200_000, list(range(20_000))],
    ids=["inline", "small", "frame", "pickle"],
)
def test_get_of_a_set_result_is_one_c_call(value: Any) -> None:
    result = mpevent.AsyncResult()
    result.set(value)
    reader = pickle.loads(pickle.dumps(result))  # a handle that has read nothing yet
    arena = reader._record.arena
    counting = _Counting(arena.native)
    arena.native = counting
    try:
        assert reader.get() == value
        assert reader.get() == value  # cached: the generation is known, the data not sent
    finally:
        arena.native = counting.native
    assert counting.calls == ["load", "load"]
