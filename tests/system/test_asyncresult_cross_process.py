"""AsyncResult across processes: values of every size, exceptions, pools."""

from __future__ import annotations

import array
import concurrent.futures
import multiprocessing as mp

import pytest
from conftest import ProcessRunner

import mpevent

SIZES = [0, 1, 100, 4095, 65_536, 1 << 20, 64 << 20]


def _set_value(result: mpevent.AsyncResult, kind: str, size: int) -> None:
    result.set(_make(kind, size))


def _make(kind: str, size: int) -> object:
    if kind == "bytes":
        return bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    if kind == "bytearray":
        return bytearray(b"y" * size)
    if kind == "array":
        return array.array("B", b"z" * size)
    return {"blob": b"w" * size, "items": list(range(size % 1000)), "name": "nested"}


def _fail_in_child(result: mpevent.AsyncResult) -> None:
    def deep_inside_the_worker() -> None:
        raise KeyError("missing")

    try:
        deep_inside_the_worker()
    except KeyError as exc:
        result.set_exception(exc)


def _get_in_child(result: mpevent.AsyncResult, answer: mpevent.AsyncResult) -> None:
    try:
        answer.set(("got", result.get(timeout=30)))
    except Exception as exc:
        answer.set_exception(exc)


def _compute(result: mpevent.AsyncResult, x: int) -> int:
    result.set(x * x)
    return x


def _read(result: mpevent.AsyncResult) -> object:
    return result.get(timeout=30)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("size", SIZES)
def test_bytes_of_every_size_reach_a_blocked_parent(
    processes: ProcessRunner, method: str, size: int
) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_set_value, result, "bytes", size, method=method)
    assert result.get(timeout=60) == _make("bytes", size)
    assert processes.join(child) == 0


def _set_all(results: list[mpevent.AsyncResult], sizes: list[int]) -> None:
    for result, size in zip(results, sizes, strict=True):
        result.set(_make("bytes", size))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_kept_results_of_every_size_are_all_whole_at_the_end(
    processes: ProcessRunner, method: str
) -> None:
    """A list of results, one per task, all kept, read at the end: each block is fresh."""
    sizes = [size for size in SIZES for _ in range(3)] + [16 << 20] * 4
    results = [mpevent.AsyncResult() for _ in sizes]
    child = processes.start(_set_all, results, sizes, method=method)
    assert processes.join(child, timeout=120) == 0
    values = [result.get(timeout=30) for result in results]  # every one kept
    for value, size in zip(values, sizes, strict=True):
        assert value == _make("bytes", size)


@pytest.mark.parametrize("kind", ["bytearray", "array", "nested"])
def test_other_value_kinds_cross_processes(processes: ProcessRunner, kind: str) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_set_value, result, kind, 3 << 20, method="spawn")
    got = result.get(timeout=60)
    assert got == _make(kind, 3 << 20)
    assert type(got) is type(_make(kind, 0))
    assert processes.join(child) == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exception_from_child_keeps_type_args_and_traceback(
    processes: ProcessRunner, method: str
) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_fail_in_child, result, method=method)
    with pytest.raises(KeyError) as info:
        result.get(timeout=60)
    assert info.value.args == ("missing",)
    assert "deep_inside_the_worker" in str(info.value.__cause__)
    assert not result.successful()
    assert processes.join(child) == 0


def test_child_blocked_in_get_wakes_with_parent_value(processes: ProcessRunner) -> None:
    result, answer = mpevent.AsyncResult(), mpevent.AsyncResult()
    child = processes.start(_get_in_child, result, answer, method="spawn")
    result.set(b"p" * (2 << 20))
    assert answer.get(timeout=60) == ("got", b"p" * (2 << 20))
    assert processes.join(child) == 0


def test_timeout_in_child_crosses_back(processes: ProcessRunner) -> None:
    result, answer = mpevent.AsyncResult(), mpevent.AsyncResult()
    # The child waits 30 s for a value that never comes... unless we interrupt:
    # instead give it an exception to relay.
    result.set_exception(mpevent.Timeout("relayed"))
    child = processes.start(_get_in_child, result, answer, method="spawn")
    with pytest.raises(mpevent.Timeout, match="relayed"):
        answer.get(timeout=60)
    assert processes.join(child) == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_worker_sets_parent_reads(method: str) -> None:
    results = [mpevent.AsyncResult() for _ in range(4)]
    with mp.get_context(method).Pool(2) as pool:
        pending = [pool.apply_async(_compute, (r, i)) for i, r in enumerate(results)]
        assert [r.get(timeout=60) for r in results] == [0, 1, 4, 9]
        assert [p.get(60) for p in pending] == [0, 1, 2, 3]
        pool.close()
        pool.join()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parent_sets_executor_worker_reads(method: str) -> None:
    result = mpevent.AsyncResult()
    context = mp.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        future = executor.submit(_read, result)
        result.set({"from": "parent"})
        assert future.result(60) == {"from": "parent"}


def test_executor_future_links_into_a_result_read_elsewhere(processes: ProcessRunner) -> None:
    """The seed page's link-target example, across processes."""
    result, answer = mpevent.AsyncResult(), mpevent.AsyncResult()
    context = mp.get_context("spawn")
    reader = processes.start(_get_in_child, result, answer, method="spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        executor.submit(divmod, 1, 0).add_done_callback(result)
        with pytest.raises(ZeroDivisionError):
            answer.get(timeout=60)
    assert processes.join(reader) == 0
