"""Claims on Redis beyond the contract: a claimer cut off past its lease, a restart, the cost.

The contract (a killed or exited claimer, every kind of waiter, refusals)
runs on every backend in tests/contract/test_claims.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis_servers
from conftest import ProcessRunner

import mpevent

AUTHKEY = "redis-claims-key"
LEASE = 1.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("MPEVENT_AUTHKEY", AUTHKEY)  # for the children
    with redis_servers.single_server(tmp_path / "redis") as port:
        yield port


def _url(port: int, lease: float = LEASE) -> str:
    return f"redis://127.0.0.1:{port}/0?lease={lease:g}"


def _claim_then_report(result: mpevent.AsyncResult, claimed: Any, go: Any, outcome: Any) -> None:
    """Claim, say so, wait for *go* (stopped meanwhile, or not), then set and report."""
    result.claim()
    claimed.set()
    go.wait(60)
    try:
        result.set("late")
    except mpevent.ClaimLost as exc:
        outcome.put(f"ClaimLost: {exc}")
    else:
        outcome.put("stored")


@contextlib.contextmanager
def _paused_claimer(backend: Any, processes: ProcessRunner) -> Iterator[tuple[Any, ...]]:
    """A child that claimed a result and is stopped (SIGSTOP, until the block
    ends): (result, child, go, outcome) of _claim_then_report.

    SIGSTOP stands in for a partition or a paused VM: the process lives,
    and its renewals stop.
    """
    result = backend.AsyncResult()
    context = mp.get_context("fork")
    claimed, go, outcome = context.Event(), context.Event(), context.Queue()
    child = processes.start(_claim_then_report, result, claimed, go, outcome)
    assert claimed.wait(60)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        yield result, child, go, outcome
    finally:
        os.kill(child.pid, signal.SIGCONT)


def _until_gone(port: int, key: str) -> None:
    """Until *key* has expired on the server (read without touching the result)."""
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 30
        while client.exists(key):
            assert time.monotonic() < deadline, f"{key} did not expire"
            time.sleep(0.05)
    finally:
        client.close()


def test_a_claimer_paused_past_its_lease_learns_it_lost_the_claim(
    server: int, processes: ProcessRunner
) -> None:
    # Nobody looks at the result meanwhile: the claimer's own set() finds
    # the lapse, stores the failure and is refused.
    with mpevent.connect(_url(server), authkey=AUTHKEY) as backend:
        with _paused_claimer(backend, processes) as (result, child, go, outcome):
            _until_gone(server, result._record.lease)
        go.set()
        said = outcome.get(timeout=30)
        assert said.startswith("ClaimLost") and "lease= parameter" in said
        processes.join(child)
        with pytest.raises(mpevent.ProcessDied) as raised:
            result.get(timeout=5)
        assert raised.value.pid == child.pid and not raised.value.exited
        assert "longer than the lease" in str(raised.value)


def test_waiters_see_the_lapse_while_the_claimer_is_paused(
    server: int, processes: ProcessRunner
) -> None:
    with mpevent.connect(_url(server), authkey=AUTHKEY) as backend:
        with (
            _paused_claimer(backend, processes) as (result, child, go, outcome),
            pytest.raises(mpevent.ProcessDied),
        ):
            result.get(timeout=LEASE + 2)
        go.set()
        assert outcome.get(timeout=30).startswith("ClaimLost")
        processes.join(child)
        assert isinstance(result.exception, mpevent.ProcessDied)  # not overwritten


def test_a_claim_rides_out_a_server_restart(
    server: int, tmp_path: Path, processes: ProcessRunner
) -> None:
    # The lease key is on disk with its expiry (AOF): a restart shorter than
    # the lease keeps the claim, and the claimer's set() lands.
    with mpevent.connect(_url(server, lease=5), authkey=AUTHKEY) as backend:
        result = backend.AsyncResult()
        context = mp.get_context("fork")
        claimed, go, outcome = context.Event(), context.Event(), context.Queue()
        child = processes.start(_claim_then_report, result, claimed, go, outcome)
        assert claimed.wait(60)
        redis_servers.stop_server(server)
        redis_servers.start_server(tmp_path / "redis", server)
        go.set()
        assert outcome.get(timeout=30) == "stored"
        assert result.get(timeout=30) == "late"
        processes.join(child)


def test_a_claim_survives_a_cluster_failover(
    tmp_path: Path, processes: ProcessRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lease shares the result's hash tag: it is on the replica that a
    # coordinated failover promotes, and renewals follow the slot there.
    monkeypatch.setenv("MPEVENT_AUTHKEY", AUTHKEY)
    lease = 2.0
    with redis_servers.cluster(tmp_path / "cluster", replicas=1) as ports:
        url = f"redis://127.0.0.1:{ports[0]}/0?lease={lease:g}"
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            result = backend.AsyncResult()
            context = mp.get_context("fork")
            claimed, go, outcome = context.Event(), context.Event(), context.Queue()
            child = processes.start(_claim_then_report, result, claimed, go, outcome)
            assert claimed.wait(60)
            slot = backend.connection.client.keyslot(result._record.key)
            redis_servers.fail_over(ports, slot)
            # Two leases more: renewed on the new master all along, never lapsed.
            assert result.wait(2 * lease) is None and not result.ready()
            go.set()
            assert outcome.get(timeout=30) == "stored"
            assert result.get(timeout=30) == "late"
            processes.join(child)


def _evalsha_calls(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def test_setting_a_claimed_result_costs_no_more_round_trips(server: int) -> None:
    # Long lease: no renewal lands between the counts (renewals are PEXPIRE).
    with mpevent.connect(_url(server, lease=60), authkey=AUTHKEY) as backend:
        plain, claimed = backend.AsyncResult(), backend.AsyncResult()
        plain.set("warm the script")
        plain = backend.AsyncResult()
        before = _evalsha_calls(server)
        plain.set(1)
        one_plain = _evalsha_calls(server) - before
        claimed.claim()
        before = _evalsha_calls(server)
        claimed.set(2)
        one_claimed = _evalsha_calls(server) - before
        assert one_plain == one_claimed == 1
        assert (plain.get(), claimed.get()) == (1, 2)


def test_closing_the_backend_fails_its_claims_as_exited(server: int) -> None:
    with mpevent.connect(_url(server), authkey=AUTHKEY) as reader:
        claimer = mpevent.connect(_url(server), authkey=AUTHKEY)
        try:
            result = claimer.AsyncResult("closing", create=True)
            result.claim()
            seen = reader.AsyncResult.open("closing")
        finally:
            claimer.close()
        with pytest.raises(mpevent.ProcessDied) as raised:
            seen.get(timeout=5)
        assert raised.value.exited and raised.value.pid == os.getpid()


def test_leases_are_not_listed_as_objects(server: int) -> None:
    with mpevent.connect(_url(server), authkey=AUTHKEY) as backend:
        result = backend.AsyncResult("listed", create=True)
        result.claim()
        assert backend.names() == ["listed"]
        result.set(None)


@pytest.mark.parametrize("lease", ["0.1", "abc", "inf", "-3"])
def test_a_bad_lease_is_refused_with_the_rule(server: int, lease: str) -> None:
    with pytest.raises(ValueError, match=r"lease=.*at least 0\.3"):
        mpevent.connect(f"redis://127.0.0.1:{server}/0?lease={lease}", authkey=AUTHKEY)
