"""Event across processes: inheritance, spawn/forkserver arguments, pools, executors."""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing as mp
import os
import pickle
import signal
import time

import pytest
from conftest import START_METHODS, ProcessRunner, wait_for_waiters

import mpevent


def _wait_then_ack(event: mpevent.Event, ack: mpevent.Event) -> None:
    if event.wait(30):
        ack.set()


def _set(event: mpevent.Event) -> bool:
    event.set()
    return event.is_set()


def _is_set(event: mpevent.Event) -> bool:
    return event.is_set()


def _make_set_event() -> mpevent.Event:
    event = mpevent.Event()
    event.set()
    return event


@pytest.mark.parametrize("method", START_METHODS)
def test_set_in_parent_wakes_waiting_child(processes: ProcessRunner, method: str) -> None:
    event, ack = mpevent.Event(), mpevent.Event()
    child = processes.start(_wait_then_ack, event, ack, method=method)
    wait_for_waiters(event, 1)
    event.set()
    assert ack.wait(30)
    assert processes.join(child) == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_set_in_child_wakes_waiting_parent(processes: ProcessRunner, method: str) -> None:
    event = mpevent.Event()
    child = processes.start(_set, event, method=method)
    assert event.wait(30)
    assert processes.join(child) == 0


def test_one_set_wakes_many_processes(processes: ProcessRunner) -> None:
    event = mpevent.Event()
    acks = [mpevent.Event() for _ in range(6)]
    children = [processes.start(_wait_then_ack, event, ack) for ack in acks]
    wait_for_waiters(event, len(children))
    event.set()
    event.clear()  # waiters that were parked still return True
    assert all(ack.wait(30) for ack in acks)
    assert all(processes.join(child) == 0 for child in children)


def test_set_does_not_block_on_a_stopped_waiter(processes: ProcessRunner) -> None:
    event, ack = mpevent.Event(), mpevent.Event()
    child = processes.start(_wait_then_ack, event, ack)
    wait_for_waiters(event, 1)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        event.set()
        # A generous bound: multiprocessing.Event.set() would block here for good.
        assert time.monotonic() - start < 5
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert ack.wait(30)
    assert processes.join(child) == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_event_pickled_into_pool_task(method: str) -> None:
    event = mpevent.Event()
    with mp.get_context(method).Pool(2) as pool:
        assert pool.apply_async(_set, (event,)).get(60) is True
        assert event.is_set()
        event.clear()
        assert pool.apply_async(_is_set, (event,)).get(60) is False
        pool.close()
        pool.join()


def test_temporary_event_survives_being_dropped_after_submission() -> None:
    with mp.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(_set, (mpevent.Event(),))  # no other reference
        gc.collect()
        assert pending.get(60) is True
        pool.close()
        pool.join()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_event_pickled_into_process_pool_executor(method: str) -> None:
    event = mpevent.Event()
    context = mp.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
        assert executor.submit(_set, event).result(60) is True
        assert event.is_set()


def test_event_made_in_a_worker_comes_back_set() -> None:
    context = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        event = executor.submit(_make_set_event).result(60)
        assert isinstance(event, mpevent.Event)
        assert event.is_set()
        event.clear()
        assert executor.submit(_is_set, event).result(60) is False


def test_pickled_handle_outlives_the_original() -> None:
    data = pickle.dumps(mpevent.Event())
    gc.collect()
    event = pickle.loads(data)
    event.set()
    assert event.is_set()
