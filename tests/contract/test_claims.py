"""Promised results on every backend: a claimed AsyncResult whose claimer ends unset raises.

The same tests on shared memory, a Redis server and a Redis Cluster.  On
shared memory the kernel tells a dead claimer (its liveness lock); on
Redis the claimer's lease runs out (``mpevent.redis._leases``), here
after LEASE seconds.  Redis-only cases (a claimer paused past its lease,
a server restart) are in tests/redis/test_redis_claims.py; shared-memory
ones (pools, PID namespaces) in tests/shm/test_pool_claims.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import CONTRACT_AUTHKEY, ProcessRunner

import mpevent

LEASE = 1.0  # seconds, on Redis
# How soon every waiter sees a dead claimer: shared memory's one-second
# watch round; on Redis the lease, then a waiter's one-second look.
SEEN_WITHIN = {"shm": 1.5, "redis": LEASE + 1.5, "cluster": LEASE + 1.5}


@pytest.fixture(params=["shm", "redis", "cluster"])
def claims(
    request: pytest.FixtureRequest, backend_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A backend of the contract; on Redis with a lease of LEASE seconds."""
    if request.param not in backend_urls:
        pytest.skip("no Redis server")
    url = backend_urls[request.param]
    if request.param != "shm":
        url += f"?lease={LEASE:g}"
    monkeypatch.setenv("MPEVENT_AUTHKEY", CONTRACT_AUTHKEY)  # for spawned children
    with mpevent.connect(url, authkey=CONTRACT_AUTHKEY) as connected:
        connected.kind = request.param
        yield connected


def _host(claims: Any) -> str | None:
    return None if claims.kind == "shm" else socket.gethostname()


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


def _claim_and_hold(result: mpevent.AsyncResult, claimed: Any, release: Any) -> None:
    result.claim()
    claimed.set()
    release.wait(60)
    result.set("from the claimer")


def _killed_claimer(claims: Any, processes: ProcessRunner, method: str = "fork") -> Any:
    result, claimed = claims.AsyncResult(), claims.Event()
    child = processes.start(_claim_then_die, result, claimed, method=method)
    assert claimed.wait(60)
    processes.join(child)
    return result, child


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_get_raises_process_died_soon_after_the_claimer_is_killed(
    claims: Any, processes: ProcessRunner, method: str
) -> None:
    if method == "forkserver" and claims.kind != "shm":
        pytest.skip(
            "the session's forkserver started before this test set MPEVENT_AUTHKEY, "
            "which its children need to reach Redis"
        )
    result, child = _killed_claimer(claims, processes, method)
    killed = time.monotonic()
    with pytest.raises(mpevent.ProcessDied) as raised:
        result.get(timeout=30)
    assert time.monotonic() - killed < SEEN_WITHIN[claims.kind]
    assert child.exitcode == -signal.SIGKILL
    died = raised.value
    assert (died.pid, died.exited, died.host) == (child.pid, False, _host(claims))
    assert "SIGKILL" in str(died) and str(child.pid) in str(died)


def test_every_kind_of_waiter_ends_when_the_claimer_dies(
    claims: Any, processes: ProcessRunner
) -> None:
    result, claimed = claims.AsyncResult(), claims.Event()
    outcomes: dict[str, object] = {}
    called = threading.Event()
    result.rawlink(lambda r: called.set())

    def get() -> None:
        try:
            result.get(timeout=30)
        except mpevent.ProcessDied as exc:
            outcomes["get"] = exc

    def wait_many() -> None:
        # Another object of the same backend beside it, set by nobody.
        outcomes["mpevent.wait"] = mpevent.wait([result, claims.Event()], timeout=30, count=1)

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
    try:
        # Spawned: four threads of ours are waiting, and a fork now could copy
        # a lock of redis-py's held by one of them (seen on 3.13t).
        child = processes.start(_claim_then_die, result, claimed, method="spawn")
        assert claimed.wait(60)
        processes.join(child)
    finally:
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert called.wait(10)
    assert isinstance(outcomes["get"], mpevent.ProcessDied)
    assert isinstance(outcomes["get_async"], mpevent.ProcessDied)
    assert outcomes["mpevent.wait"] == [result]
    assert outcomes["wait"] is None  # gevent's wait(): the value, None on an exception


def _read_in_another_process(result: mpevent.AsyncResult) -> str:
    try:
        result.get(timeout=10)
    except mpevent.ProcessDied as exc:
        return f"ProcessDied {exc.pid} {exc.host}"
    return "no exception"


def test_the_failure_is_stored_for_later_readers(claims: Any, processes: ProcessRunner) -> None:
    result, child = _killed_claimer(claims, processes)
    with pytest.raises(mpevent.ProcessDied):
        result.get(timeout=30)
    assert result.ready() and not result.successful()
    assert isinstance(result.exception, mpevent.ProcessDied)
    again = pickle.loads(pickle.dumps(result.exception))
    assert (again.pid, again.exited, again.host) == (child.pid, False, _host(claims))
    with concurrent.futures.ProcessPoolExecutor(1, mp.get_context("spawn")) as pool:
        assert pool.submit(_read_in_another_process, result).result(60) == (
            f"ProcessDied {child.pid} {_host(claims)}"
        )


def test_a_claimer_that_exits_without_setting_is_reported_as_exited(
    claims: Any, processes: ProcessRunner
) -> None:
    result = claims.AsyncResult()
    child = processes.start(_claim_then_exit, result, method="spawn")
    processes.join(child, timeout=60)
    assert child.exitcode == 0
    with pytest.raises(mpevent.ProcessDied) as raised:
        result.get(timeout=5)  # failed by its exit, not by a lapse
    assert raised.value.exited and "exited without setting it" in str(raised.value)


def test_a_claimer_that_sets_the_result_delivers_its_value(
    claims: Any, processes: ProcessRunner
) -> None:
    result = claims.AsyncResult()
    child = processes.start(_claim_and_set, result)
    assert result.get(timeout=30) == "done"
    processes.join(child)
    time.sleep(SEEN_WITHIN[claims.kind])  # past any lease: the claim ended with the set
    assert result.get() == "done"


def test_an_exception_escaping_the_claim_block_is_stored(
    claims: Any, processes: ProcessRunner
) -> None:
    result = claims.AsyncResult()
    child = processes.start(_claim_and_raise, result)
    with pytest.raises(KeyError, match="the worker's own error"):
        result.get(timeout=30)
    processes.join(child)


def test_claiming_a_set_result_is_refused_and_changes_nothing(claims: Any) -> None:
    result = claims.AsyncResult()
    result.set(1)
    with pytest.raises(ValueError, match="set already"):
        result.claim()
    assert result.get() == 1


@contextlib.contextmanager
def _held_claim(claims: Any, processes: ProcessRunner) -> Iterator[tuple[Any, Any]]:
    """A child that claimed a result and holds it until the block ends, then
    sets it ("from the claimer"); (result, child)."""
    result, claimed, release = claims.AsyncResult(), claims.Event(), claims.Event()
    child = processes.start(_claim_and_hold, result, claimed, release)
    assert claimed.wait(60)
    yield result, child
    release.set()
    assert result.get(timeout=30) == "from the claimer"
    processes.join(child)


def test_a_result_claimed_by_a_live_process_cannot_be_claimed_again(
    claims: Any, processes: ProcessRunner
) -> None:
    with _held_claim(claims, processes) as (result, child):
        with pytest.raises(ValueError, match="claimed already by a live process") as refused:
            result.claim()
        assert str(child.pid) in str(refused.value)
        assert not result.ready()


def test_a_claim_outlives_its_lease_while_its_claimer_lives(
    claims: Any, processes: ProcessRunner
) -> None:
    # The claimer's renewals keep it: several leases pass, nobody fails it.
    with _held_claim(claims, processes) as (result, _child):
        assert result.wait(3 * LEASE) is None and not result.ready()


def test_claiming_twice_in_one_process_is_allowed_and_claim_after_close_is_refused(
    claims: Any,
) -> None:
    result = claims.AsyncResult()
    result.claim()
    result.claim()  # the same promise again
    result.set("kept")
    assert result.get() == "kept"
    result.close()
    with pytest.raises(ValueError, match="closed"):
        result.claim()
