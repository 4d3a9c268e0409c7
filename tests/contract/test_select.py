"""mpevent.wait / mpevent.iwait: many objects, one waiting thread."""

from __future__ import annotations

import time

import pytest
from conftest import ProcessRunner

import mpevent


def _set_in_order(objects: list[object], go: mpevent.Event) -> None:
    go.wait(30)
    for obj in objects:
        if isinstance(obj, mpevent.AsyncResult):
            obj.set("value")
        else:
            obj.set()  # type: ignore[attr-defined]
        time.sleep(0.05)  # distinct moments, so the order is observable


def test_wait_returns_objects_in_the_order_they_were_set(processes: ProcessRunner) -> None:
    a, b, c = mpevent.Event(), mpevent.AsyncResult(), mpevent.Event()
    go = mpevent.Event()
    child = processes.start(_set_in_order, [c, b, a], go, method="spawn")
    go.set()
    assert mpevent.wait([a, b, c], timeout=30) == [c, b, a]
    assert processes.join(child) == 0


def test_wait_with_count_returns_early(processes: ProcessRunner) -> None:
    objects = [mpevent.Event() for _ in range(4)]
    go = mpevent.Event()
    child = processes.start(_set_in_order, objects[2:], go)
    go.set()
    assert mpevent.wait(objects, timeout=30, count=1) == [objects[2]]
    assert processes.join(child) == 0
    assert mpevent.wait(objects, timeout=0, count=2) == objects[2:]


def test_wait_times_out_with_what_is_ready() -> None:
    ready, never = mpevent.Event(), mpevent.AsyncResult()
    ready.set()
    start = time.monotonic()
    assert mpevent.wait([never, ready], timeout=0.2) == [ready]
    assert time.monotonic() - start >= 0.15


def test_iwait_yields_as_objects_become_ready(processes: ProcessRunner) -> None:
    objects = [mpevent.AsyncResult() for _ in range(3)]
    go = mpevent.Event()
    child = processes.start(_set_in_order, objects, go, method="fork")
    go.set()
    assert list(mpevent.iwait(objects, timeout=30)) == objects
    assert processes.join(child) == 0


def test_waiter_links_are_removed_after_waiting() -> None:
    objects = [mpevent.Event() for _ in range(5)]
    assert mpevent.wait(objects, timeout=0.01) == []
    for event in objects:
        assert event._record.native.record_info(event._record.index)["waiters"] == 0


@pytest.mark.parametrize("count", [-1, 4, 1.5, "2"])
def test_bad_count_is_refused(count: object) -> None:
    objects = [mpevent.Event() for _ in range(3)]
    with pytest.raises((TypeError, ValueError), match="count"):
        mpevent.wait(objects, count=count)  # type: ignore[arg-type]


def test_non_mpevent_objects_are_refused() -> None:
    import threading

    with pytest.raises(TypeError, match="only wait on mpevent"):
        mpevent.wait([threading.Event()])  # type: ignore[list-item]


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(TypeError, match="timeout"):
        mpevent.wait([mpevent.Event()], timeout="soon")  # type: ignore[arg-type]
