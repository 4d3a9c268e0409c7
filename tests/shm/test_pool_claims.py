"""Promised results on shared memory: pools, executors, and a dead claimer's result taken over.

The contract every backend keeps is in tests/contract/test_claims.py.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import signal
from typing import Any

import pytest
from conftest import ProcessRunner

import mpevent


def _claim_then_die(result: mpevent.AsyncResult, claimed: Any) -> None:
    result.claim()
    claimed.set()
    os.kill(os.getpid(), signal.SIGKILL)


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


def test_a_result_claimed_by_a_dead_process_can_be_claimed_anew(
    processes: ProcessRunner,
) -> None:
    result, child = _killed_claimer(processes)
    processes.join(child)
    # Unnoticed yet (nobody waited): a new claim takes it over.
    result.claim()
    result.set("second worker")
    assert result.get() == "second worker"
