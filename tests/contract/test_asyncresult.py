"""AsyncResult in one process: the gevent API, values, exceptions, bad input."""

from __future__ import annotations

import array
import concurrent.futures
import gc
import pickle
import threading

import pytest

import mpevent
from mpevent.shm import _arena


def test_seed_example_value() -> None:
    result = mpevent.AsyncResult()
    result.set(100)
    assert result.get() == 100


def test_seed_example_exception() -> None:
    result = mpevent.AsyncResult()
    result.set_exception(RuntimeError("failure"))
    with pytest.raises(RuntimeError, match="failure"):
        result.get()


def test_seed_example_link_target_with_gevent() -> None:
    gevent = pytest.importorskip("gevent")
    result = mpevent.AsyncResult()
    try:
        gevent.spawn(lambda: 1 / 0).link(result)
        gevent.sleep(0.01)
    finally:
        gevent.get_hub().destroy(destroy_loop=True)  # its loop holds descriptors
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=10)


def test_new_result_is_empty() -> None:
    result = mpevent.AsyncResult()
    assert not result.ready()
    assert not result.successful()
    assert result.value is None
    assert result.exception is None
    assert result.exc_info == ()
    assert result.wait(0) is None
    assert repr(result).endswith(": unset>")


def test_timeout_is_a_timeout_error() -> None:
    assert issubclass(mpevent.Timeout, TimeoutError)
    result = mpevent.AsyncResult()
    with pytest.raises(mpevent.Timeout):
        result.get_nowait()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.01)
    with pytest.raises(mpevent.Timeout):
        result.get(block=False, timeout=10)


def test_get_wakes_when_another_thread_sets() -> None:
    result = mpevent.AsyncResult()
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(result.get(timeout=30)))
    thread.start()
    result.set({"answer": 42})
    thread.join(30)
    assert got == [{"answer": 42}]


def test_wait_returns_value_or_none_on_exception() -> None:
    ok, bad = mpevent.AsyncResult(), mpevent.AsyncResult()
    ok.set("v")
    bad.set_exception(ValueError("x"))
    assert ok.wait() == "v"
    assert bad.wait() is None
    assert bad.exc_info[0] is ValueError


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        "",
        b"",
        "text" * 10,
        b"\x00" * 100,
        b"\x01" * 70_000,  # beyond the small blocks: a large block, out of band
        bytearray(b"ab" * 5000),
        array.array("d", range(2000)),
        {"nested": [1, (2, 3), {"x": frozenset({4})}]},
    ],
    ids=lambda v: type(v).__name__ + str(len(v) if hasattr(v, "__len__") else ""),
)
def test_values_round_trip(value: object) -> None:
    result = mpevent.AsyncResult()
    result.set(value)
    copy = pickle.loads(pickle.dumps(result))
    assert copy.get() == value
    assert type(copy.get()) is type(value)


def test_memoryview_value_arrives_as_equal_memoryview() -> None:
    result = mpevent.AsyncResult()
    result.set(memoryview(b"z" * 10_000))
    got = pickle.loads(pickle.dumps(result)).get()
    assert isinstance(got, memoryview)
    assert got.tobytes() == b"z" * 10_000


def test_repeated_get_returns_the_same_object() -> None:
    result = mpevent.AsyncResult()
    result.set([1, 2, 3])
    assert result.get() is result.get()


def test_unpicklable_value_is_refused_and_leaves_result_unset() -> None:
    result = mpevent.AsyncResult()
    with pytest.raises(TypeError, match="'lock'"):
        result.set(threading.Lock())
    assert not result.ready()
    with pytest.raises(TypeError, match="'dict'"):
        result.set({"inner": threading.Lock()})
    assert not result.ready()


def test_set_exception_rejects_non_exceptions() -> None:
    result = mpevent.AsyncResult()
    with pytest.raises(TypeError, match="exception instance or class"):
        result.set_exception("boom")  # type: ignore[arg-type]
    assert not result.ready()


def test_set_exception_accepts_a_class() -> None:
    result = mpevent.AsyncResult()
    result.set_exception(KeyError)
    with pytest.raises(KeyError):
        result.get()


class _Unpicklable(Exception):
    def __init__(self, lock: object) -> None:
        super().__init__("holds a lock")
        self.lock = lock


def test_unpicklable_exception_arrives_as_a_stand_in() -> None:
    result = mpevent.AsyncResult()
    try:
        raise _Unpicklable(threading.Lock())
    except _Unpicklable as exc:
        result.set_exception(exc)
    with pytest.raises(mpevent.RemoteException) as info:
        result.get()
    assert info.value.type_name.endswith("_Unpicklable")
    assert info.value.message == "holds a lock"
    assert "raise _Unpicklable" in info.value.traceback_text


def test_exception_carries_its_traceback_text() -> None:
    def fail() -> None:
        raise LookupError("deep")

    result = mpevent.AsyncResult()
    try:
        fail()
    except LookupError as exc:
        result.set_exception(exc)
    with pytest.raises(LookupError) as info:
        pickle.loads(pickle.dumps(result)).get()
    assert isinstance(info.value.__cause__, mpevent.RemoteTraceback)
    assert "in fail" in str(info.value.__cause__)


def test_future_done_callback_sets_the_result() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        ok, bad = mpevent.AsyncResult(), mpevent.AsyncResult()
        executor.submit(lambda: 7).add_done_callback(ok)
        executor.submit(lambda: 1 / 0).add_done_callback(bad)
        assert ok.get(timeout=30) == 7
        with pytest.raises(ZeroDivisionError):
            bad.get(timeout=30)


def test_another_async_result_as_source() -> None:
    source, target = mpevent.AsyncResult(), mpevent.AsyncResult()
    source.set("from source")
    target(source)
    assert target.get() == "from source"


def _create_and_drop(count: int) -> None:
    mpevent.AsyncResult().set(b"warm")
    arena = _arena.attached()[0]
    gc.collect()
    before = arena.native.statistics()
    heap_before = arena.native.heap_statistics()
    for _ in range(count):
        result = mpevent.AsyncResult()
        result.set(b"k" * 1024)
        del result
    gc.collect()
    after = arena.native.statistics()
    heap_after = arena.native.heap_statistics()
    assert after["records_live"] <= before["records_live"] + 1
    assert heap_after["small_used"] <= heap_before["small_used"] + 2048
    # The heap was carved once and then recycled, not grown per result.
    assert heap_after["small_carved"] - heap_before["small_carved"] <= 64 * 2048


def test_dropped_results_reclaim_their_memory() -> None:
    _create_and_drop(20_000)


@pytest.mark.stress
def test_a_million_dropped_results_keep_memory_bounded() -> None:
    _create_and_drop(1_000_000)


def test_large_values_reuse_freed_blocks() -> None:
    gc.collect()
    arena = _arena.attached()[0]
    for n in range(30):
        result = mpevent.AsyncResult()
        result.set(bytes([n]) * (1 << 20))
        assert pickle.loads(pickle.dumps(result)).get()[:1] == bytes([n])
        del result
        gc.collect()
        if n == 0:
            carved = arena.native.heap_statistics()["large_carved"]
    assert arena.native.heap_statistics()["large_carved"] == carved


def test_setting_a_large_value_twice_replaces_it() -> None:
    result = mpevent.AsyncResult()
    result.set(b"a" * (1 << 20))
    reader = pickle.loads(pickle.dumps(result))
    assert reader.get()[:1] == b"a"
    result.set(b"b" * (2 << 20))
    assert reader.get() == b"b" * (2 << 20)
    assert result.get() == b"b" * (2 << 20)
