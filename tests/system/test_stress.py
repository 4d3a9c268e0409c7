"""Load: many processes passing a token around a ring of Events; no wakeup is lost.

Each process waits on its own Event, clears it and sets the next one.  A
lost wakeup stops the ring for good, so every wait has a deadline and must
return True.  CI runs a small ring; ``-m stress`` runs 16 processes x
100,000 operations.
"""

from __future__ import annotations

import pytest
from conftest import ProcessRunner

import mpevent


def _ring_member(
    mine: mpevent.Event, following: mpevent.Event, laps: int, lost: mpevent.AsyncResult
) -> None:
    for lap in range(laps):
        if not mine.wait(60):
            lost.set(f"lap {lap}: wait() timed out; a wakeup was lost")
            return
        mine.clear()
        following.set()


def _run_ring(processes: ProcessRunner, members: int, operations: int) -> None:
    events = [mpevent.Event() for _ in range(members)]
    lost = mpevent.AsyncResult()
    laps = operations // 3  # wait, clear, set per lap
    children = [
        processes.start(_ring_member, events[i], events[(i + 1) % members], laps, lost)
        for i in range(1, members)
    ]
    events[1].set()  # hand the token to the first child
    for lap in range(laps):
        assert events[0].wait(60), f"lap {lap}: the token never came back"
        assert not lost.ready(), lost.get()
        events[0].clear()
        if lap + 1 < laps:
            events[1].set()
    for child in children:
        assert processes.join(child, timeout=60) == 0
    assert not lost.ready()


def test_token_ring_loses_no_wakeup(processes: ProcessRunner) -> None:
    _run_ring(processes, members=4, operations=6000)


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_token_ring_16_processes_100k_operations(processes: ProcessRunner) -> None:
    _run_ring(processes, members=16, operations=100_000)


def _flock_waiter(go: list[mpevent.Event], acks: list[mpevent.Event], rounds: int) -> None:
    for r in range(rounds):
        assert go[r % 2].wait(60), f"round {r}: a wakeup was lost"
        acks[r % 2].set()


def _flock(processes: ProcessRunner, members: int, rounds: int) -> None:
    """One coordinator sets, every waiter must wake, round after round.

    Rounds alternate between two Events, so a waiter never sees the
    previous round's flag: go[r % 2] is cleared before go[(r + 1) % 2] is
    set, and a waiter reaches round r + 2 only after acking round r + 1.
    """
    go = [mpevent.Event(), mpevent.Event()]
    acks = [[mpevent.Event(), mpevent.Event()] for _ in range(members)]
    children = [processes.start(_flock_waiter, go, pair, rounds) for pair in acks]
    for r in range(rounds):
        go[r % 2].set()
        this_round = [pair[r % 2] for pair in acks]
        assert len(mpevent.wait(this_round, timeout=60)) == members, f"round {r}"
        for ack in this_round:
            ack.clear()
        go[r % 2].clear()
    for child in children:
        assert processes.join(child, timeout=60) == 0


def test_many_waiters_wake_on_every_set(processes: ProcessRunner) -> None:
    _flock(processes, members=8, rounds=300)


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_many_waiters_wake_on_every_set_16_processes(processes: ProcessRunner) -> None:
    _flock(processes, members=15, rounds=10_000)


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_a_broadcast_to_64_processes_loses_no_wakeup(processes: ProcessRunner) -> None:
    _flock(processes, members=64, rounds=10_000)
