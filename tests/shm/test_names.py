"""Named objects and closing handles."""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest

import mpevent
from mpevent.shm import _names, _segment


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    unique = f"test-{os.getpid()}-{request.node.name}".replace("[", "-").replace("]", "")
    yield unique
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_segment.path_of(_segment.NAME_PREFIX + unique))


def test_open_by_name_from_an_unrelated_process(name: str) -> None:
    event = mpevent.Event(name, create=True)
    assert event.name == name
    program = f"import mpevent; e = mpevent.Event.open({name!r}); e.set(); print(e.is_set())"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert event.is_set()
    event.remove_name()


def test_named_async_result_carries_values(name: str) -> None:
    result = mpevent.AsyncResult(name, create=True)
    other = mpevent.AsyncResult.open(name)
    result.set([1, 2])
    assert other.get(timeout=5) == [1, 2]
    result.remove_name()


def test_opening_a_missing_name_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="no mpevent object is named"):
        mpevent.Event.open("no-such-object-anywhere")


def test_creating_a_taken_name_is_file_exists(name: str) -> None:
    first = mpevent.Event(name, create=True)
    with pytest.raises(FileExistsError, match="already exists"):
        mpevent.Event(name, create=True)
    first.set()
    assert mpevent.Event.open(name).is_set()  # the first is untouched
    first.remove_name()


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 300, "sp ace"])
def test_malformed_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        mpevent.Event(bad, create=True)


def test_non_string_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        mpevent.Event(42, create=True)  # type: ignore[arg-type]


def test_opening_with_the_wrong_class_is_a_type_error(name: str) -> None:
    event = mpevent.Event(name, create=True)
    with pytest.raises(TypeError, match="kind"):
        mpevent.AsyncResult.open(name)
    event.remove_name()


def test_name_keeps_the_object_alive_until_removed(name: str) -> None:
    event = mpevent.Event(name, create=True)
    event.set()
    del event
    gc.collect()
    again = mpevent.Event.open(name)
    assert again.is_set()
    again.remove_name()
    with pytest.raises(FileNotFoundError):
        mpevent.Event.open(name)


def test_name_file_is_private(name: str) -> None:
    mpevent.Event(name, create=True)
    path = _segment.path_of(_segment.NAME_PREFIX + name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert name in _names.names()
    mpevent.Event.open(name).remove_name()


def test_closed_handle_refuses_every_use() -> None:
    event = mpevent.Event()
    event.close()
    event.close()  # twice is fine
    assert repr(event).endswith(": closed>")
    for use in (event.set, event.clear, event.is_set, lambda: event.wait(0)):
        with pytest.raises(ValueError, match=r"closed mpevent\.Event"):
            use()


def test_context_manager_closes() -> None:
    with mpevent.AsyncResult() as result:
        result.set(1)
        assert result.get() == 1
    with pytest.raises(ValueError, match="closed"):
        result.get()


def test_closing_drops_pending_callbacks() -> None:
    from mpevent.shm import _hub

    event = mpevent.Event()
    event.rawlink(print)
    hub = _hub.existing_hub(event._record.arena)
    assert hub is not None
    linked = hub.linked()
    record = event._record
    event.close()
    assert hub.linked() == linked - 1
    assert record.info()["waiters"] == 0
