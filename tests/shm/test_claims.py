"""Promised results: a claimed AsyncResult whose claimer dies raises ProcessDied."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent

# A SIGKILL is seen by the next one-second watch round: about a second.
SEEN_WITHIN = 1.5


def _claim_then_die(result: mpevent.AsyncResult, claimed: Any) -> None:
    result.claim()
    claimed.set()
    os.kill(os.getpid(), signal.SIGKILL)


def _claim_then_exit(result: mpevent.AsyncResult) -> None:
    result.claim()
    # Returns without setting it: multiprocessing runs the exit finalizers.


def _claim_and_set(result: mpevent.AsyncResult) -> None:
    with result.claim():
        result.set("done")


def _claim_and_raise(result: mpevent.AsyncResult) -> None:
    with result.claim():
        raise KeyError("the worker's own error")


def _kill_after_claim(result: mpevent.AsyncResult, claimed: mpevent.Event) -> str:
    result.claim()
    claimed.set()
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def _killed_claimer(processes: ProcessRunner, method: str = "fork") -> tuple[Any, Any]:
    result = mpevent.AsyncResult()
    claimed = mpevent.Event()
    child = processes.start(_claim_then_die, result, claimed, method=method)
    assert claimed.wait(60)
    return result, child


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_get_raises_process_died_soon_after_the_claimer_is_killed(
    processes: ProcessRunner, method: str
) -> None:
    result, child = _killed_claimer(processes, method)
    processes.join(child)
    killed = time.monotonic()
    with pytest.raises(mpevent.ProcessDied) as raised:
        result.get(timeout=30)
    assert time.monotonic() - killed < SEEN_WITHIN
    assert child.exitcode == -signal.SIGKILL
    assert raised.value.pid == child.pid and not raised.value.exited
    assert "SIGKILL" in str(raised.value) and str(child.pid) in str(raised.value)


def test_every_kind_of_waiter_ends_when_the_claimer_dies(processes: ProcessRunner) -> None:
    result = mpevent.AsyncResult()
    claimed = mpevent.Event()
    outcomes: dict[str, object] = {}
    called = threading.Event()
    result.rawlink(lambda r: called.set())

    def get() -> None:
        try:
            result.get(timeout=30)
        except mpevent.ProcessDied as exc:
            outcomes["get"] = exc

    def wait_many() -> None:
        outcomes["mpevent.wait"] = mpevent.wait([result, mpevent.Event()], timeout=30, count=1)

    async def get_async() -> None:
        try:
            await result.get_async(timeout=30)
        except mpevent.ProcessDied as exc:
            outcomes["get_async"] = exc

    threads = [
        threading.Thread(target=get),
        threading.Thread(target=wait_many),
        threading.Thread(target=lambda: outcomes.setdefault("wait", result.wait(30))),
        threading.Thread(target=lambda: asyncio.run(get_async())),
    ]
    for thread in threads:
        thread.start()
    child = processes.start(_claim_then_die, result, claimed)
    assert claimed.wait(60)
    processes.join(child)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert called.wait(10)
    assert isinstance(outcomes["get"], mpevent.ProcessDied)
    assert isinstance(outcomes["get_async"], mpevent.ProcessDied)
    assert outcomes["mpevent.wait"] == [result]
    assert outcomes["wait"] is None  # gevent's wait(): the value, None on an exception


def _read_in_another_process(result: mpevent.AsyncResult) -> str:
    try:
        result.get(timeout=10)
    except mpevent.ProcessDied as exc:
        return f"ProcessDied {exc.pid}"
    return "no exception"


def test_the_failure_is_stored_for_later_readers(processes: ProcessRunner) -> None:
    result, child = _killed_claimer(processes)
    processes.join(child)
    with pytest.raises(mpevent.ProcessDied):
        result.get(timeout=30)
    assert result.ready() and not result.successful()
    assert isinstance(result.exception, mpevent.ProcessDied)
    again = pickle.loads(pickle.dumps(result.exception))
    assert (again.pid, again.exited) == (child.pid, False)
    with concurrent.futures.ProcessPoolExecutor(1, mp.get_context("spawn")) as pool:
        assert pool.submit(_read_in_another_process, result).result(60) == (
            f"ProcessDied {child.pid}"
        )


def test_a_claimer_that_exits_without_setting_is_reported_as_exited(
    processes: ProcessRunner,
) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_claim_then_exit, result, method="spawn")
    processes.join(child)
    assert child.exitcode == 0
    with pytest.raises(mpevent.ProcessDied) as raised:
        result.get(timeout=5)
    assert raised.value.exited and "exited without setting it" in str(raised.value)


def test_a_claimer_that_sets_the_result_delivers_its_value(processes: ProcessRunner) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_claim_and_set, result)
    assert result.get(timeout=30) == "done"
    processes.join(child)
    assert result.get() == "done"  # its exit after setting changes nothing


def test_an_exception_escaping_the_claim_block_is_stored(processes: ProcessRunner) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_claim_and_raise, result)
    with pytest.raises(KeyError, match="the worker's own error"):
        result.get(timeout=30)
    processes.join(child)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_worker_killed_after_claiming_fails_the_parents_get(method: str) -> None:
    # multiprocessing.Pool's own AsyncResult hangs here (python/cpython#96062).
    result, claimed = mpevent.AsyncResult(), mpevent.Event()
    pool = mp.get_context(method).Pool(1)
    try:
        pool.apply_async(_kill_after_claim, (result, claimed))
        assert claimed.wait(60)
        with pytest.raises(mpevent.ProcessDied):
            result.get(timeout=30)
    finally:
        pool.terminate()
        pool.join()


def test_a_process_pool_executor_worker_killed_after_claiming_fails_get() -> None:
    result, claimed = mpevent.AsyncResult(), mpevent.Event()
    with concurrent.futures.ProcessPoolExecutor(1, mp.get_context("spawn")) as pool:
        future = pool.submit(_kill_after_claim, result, claimed)
        assert claimed.wait(60)
        with pytest.raises(mpevent.ProcessDied):
            result.get(timeout=30)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            future.result(30)


def test_claiming_a_set_result_is_refused_and_changes_nothing() -> None:
    result = mpevent.AsyncResult()
    result.set(1)
    with pytest.raises(ValueError, match="set already"):
        result.claim()
    assert result.get() == 1


def _claim_and_hold(result: mpevent.AsyncResult, claimed: Any, release: Any) -> None:
    result.claim()
    claimed.set()
    release.wait(60)
    result.set("from the claimer")


def test_a_result_claimed_by_a_live_process_cannot_be_claimed_again(
    processes: ProcessRunner,
) -> None:
    result, claimed, release = mpevent.AsyncResult(), mpevent.Event(), mpevent.Event()
    child = processes.start(_claim_and_hold, result, claimed, release)
    assert claimed.wait(60)
    with pytest.raises(ValueError, match="claimed already by a live process"):
        result.claim()
    assert not result.ready()
    release.set()
    assert result.get(timeout=30) == "from the claimer"
    processes.join(child)


def test_claiming_twice_in_one_process_is_allowed_and_claim_after_close_is_refused() -> None:
    result = mpevent.AsyncResult()
    result.claim()
    result.claim()  # the same promise again
    result.set("kept")
    result.close()
    with pytest.raises(ValueError, match="closed"):
        result.claim()


def test_a_result_claimed_by_a_dead_process_can_be_claimed_anew(
    processes: ProcessRunner,
) -> None:
    result, child = _killed_claimer(processes)
    processes.join(child)
    # Unnoticed yet (nobody waited): a new claim takes it over.
    result.claim()
    result.set("second worker")
    assert result.get() == "second worker"


def test_claim_on_redis_is_refused_with_the_reason() -> None:
    from mpevent.redis._record import RedisRecord

    with pytest.raises(NotImplementedError, match="shared memory only"):
        RedisRecord.claim(None)  # type: ignore[arg-type]
