"""The hub: rawlink callbacks run in the registering process, once, in order."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _hub


def _set_all(objects: list[Any]) -> None:
    for obj in objects:
        if isinstance(obj, mpevent.AsyncResult):
            obj.set("from child")
        else:
            obj.set()


def test_callback_in_parent_fires_when_spawn_child_sets(processes: ProcessRunner) -> None:
    event, result = mpevent.Event(), mpevent.AsyncResult()
    seen: list[Any] = []
    done = threading.Event()

    def on_result(obj: mpevent.AsyncResult) -> None:
        seen.append(obj.get())
        done.set()

    event.rawlink(seen.append)
    result.rawlink(on_result)
    child = processes.start(_set_all, [event, result], method="spawn")
    assert done.wait(30)
    assert seen[0] is event and seen[1] == "from child"
    assert processes.join(child) == 0


def test_a_thousand_linked_objects_use_one_hub_thread(processes: ProcessRunner) -> None:
    events = [mpevent.Event() for _ in range(1000)]
    fired: list[mpevent.Event] = []
    all_fired = threading.Event()
    lock = threading.Lock()

    def count(obj: mpevent.Event) -> None:
        with lock:
            fired.append(obj)
            if len(fired) == len(events):
                all_fired.set()

    before = {t.name for t in threading.enumerate()}
    for event in events:
        event.rawlink(count)
    hubs = [t for t in threading.enumerate() if t.name == "mpevent-hub"]
    assert len(hubs) == 1
    assert len({t.name for t in threading.enumerate()} - before) <= 1
    child = processes.start(_set_all, events, method="fork")
    assert all_fired.wait(60)
    assert {id(e) for e in fired} == {id(e) for e in events}
    assert processes.join(child) == 0


def test_callbacks_run_once_in_registration_order() -> None:
    event = mpevent.Event()
    calls: list[str] = []
    done = threading.Event()
    for name in "abc":
        event.rawlink(lambda _obj, name=name: calls.append(name))
    event.rawlink(lambda _obj: done.set())
    event.set()
    assert done.wait(10)
    assert calls == ["a", "b", "c"]
    again = threading.Event()
    event.clear()
    event.rawlink(lambda _obj: again.set())
    event.set()
    assert again.wait(10)
    assert calls == ["a", "b", "c"]  # one-shot, as in gevent


def test_callback_on_an_already_set_object_runs_soon() -> None:
    result = mpevent.AsyncResult()
    result.set(1)
    done = threading.Event()
    result.rawlink(lambda _obj: done.set())
    assert done.wait(10)


def test_unlink_removes_and_ignores_unknown() -> None:
    event = mpevent.Event()
    calls: list[str] = []
    done = threading.Event()

    def unwanted(_obj: object) -> None:
        calls.append("unwanted")

    event.unlink(unwanted)  # unknown: no-op, no hub needed
    event.rawlink(unwanted)
    event.unlink(unwanted)
    event.unlink(unwanted)
    event.rawlink(lambda _obj: done.set())
    event.set()
    assert done.wait(10)
    assert calls == []


def test_unlinking_everything_dequeues_the_hub_link() -> None:
    event = mpevent.Event()
    callback = print
    event.rawlink(callback)
    hub = _hub.existing_hub(event._record.arena)
    assert hub is not None
    linked = hub.linked()
    event.unlink(callback)
    assert hub.linked() == linked - 1
    info = event._record.native.record_info(event._record.index)
    assert info["waiters"] == 0


def test_raising_callback_is_reported_and_hub_carries_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
    event = mpevent.Event()
    done = threading.Event()

    def bad(_obj: object) -> None:
        raise ValueError("callback failed")

    event.rawlink(bad)
    event.rawlink(lambda _obj: done.set())
    event.set()
    assert done.wait(10)
    assert [str(e) for e in reported] == ["callback failed"]
    later = mpevent.Event()
    again = threading.Event()
    later.rawlink(lambda _obj: again.set())
    later.set()
    assert again.wait(10)


def test_callback_may_set_and_link_without_deadlock() -> None:
    first, second = mpevent.Event(), mpevent.Event()
    done = threading.Event()

    def chain(_obj: object) -> None:
        second.rawlink(lambda _o: done.set())
        second.set()

    first.rawlink(chain)
    first.set()
    assert done.wait(10)


def test_a_callback_linked_to_its_own_object_while_callbacks_run_runs_once() -> None:
    # The hub runs a wakeup's callbacks before its bookkeeping: the object's
    # entry is still linked then, so this rawlink() joins it, after the
    # snapshot that ran; the bookkeeping must run it, and only once.
    event = mpevent.Event()
    calls: list[str] = []
    done = threading.Event()

    def late(_obj: object) -> None:
        calls.append("late")
        done.set()

    def first(_obj: object) -> None:
        calls.append("first")
        event.rawlink(late)

    event.rawlink(first)
    event.set()
    assert done.wait(10)
    settled = threading.Event()
    other = mpevent.Event()
    other.rawlink(lambda _obj: settled.set())  # the hub has finished the round before
    other.set()
    assert settled.wait(10)
    assert calls == ["first", "late"]


@pytest.mark.parametrize("bad", [None, 42, "callback"])
def test_non_callable_is_a_type_error(bad: object) -> None:
    event = mpevent.Event()
    with pytest.raises(TypeError, match="needs a callable"):
        event.rawlink(bad)  # type: ignore[arg-type]


def _child_has_no_hub(event: mpevent.Event, answer: mpevent.AsyncResult) -> None:
    inherited = dict(_hub._hubs)
    done = threading.Event()
    mine = mpevent.Event()
    mine.rawlink(lambda _obj: done.set())
    mine.set()
    answer.set((len(inherited), done.wait(10)))


def test_fork_child_starts_without_the_parents_registrations(processes: ProcessRunner) -> None:
    event, answer = mpevent.Event(), mpevent.AsyncResult()
    event.rawlink(print)
    child = processes.start(_child_has_no_hub, event, answer, method="fork")
    assert answer.get(timeout=30) == (0, True)
    assert processes.join(child) == 0
    event.unlink(print)


def test_interpreter_exit_does_not_wait_for_the_hub() -> None:
    program = "import mpevent; e = mpevent.Event(); e.rawlink(print); print('bye')"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bye"


def test_hub_statistics_count_linked_objects() -> None:
    events = [mpevent.Event() for _ in range(10)]
    for event in events:
        event.rawlink(print)
    hub = _hub.existing_hub(events[0]._record.arena)
    assert hub is not None
    linked = hub.linked()
    assert linked >= 10
    for event in events:
        event.unlink(print)
    assert hub.linked() == linked - 10


def test_an_idle_hub_ends_its_thread_so_a_later_fork_does_not_warn() -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, threading, time, warnings
        import mpevent

        event = mpevent.Event()
        called = threading.Event()
        event.rawlink(lambda _: called.set())
        event.set()
        assert called.wait(10)
        deadline = time.monotonic() + 10
        while threading.active_count() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the hub ends after a second with nothing linked
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        print(threading.active_count(), len(caught))
        event.clear()
        event.rawlink(lambda _: called.clear())  # a new hub starts when needed
        event.set()
        deadline = time.monotonic() + 10
        while called.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(called.is_set())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "False"]
