"""Spinning before parking: when a waiter spins, and that it never does where it cannot pay.

The rules are in ``spin_for_flag`` (src/native/spin.c); each test runs
its waits in a fresh interpreter with the spin limit it needs, and reads
that process's decisions from ``_native.spin_stats()``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mpevent

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two_cpus = pytest.mark.skipif(not TWO_CPUS, reason="needs two usable CPUs")

# A ping-pong between two threads of one process; prints its spin decisions.
PING_PONG = """
import threading, json, mpevent
from mpevent.shm import _native
ping, pong = mpevent.Event(), mpevent.Event()
def partner():
    for _ in range(2000):
        assert ping.wait(30)
        ping.clear()
        pong.set()
thread = threading.Thread(target=partner)
thread.start()
for _ in range(2000):
    ping.set()
    assert pong.wait(30)
    pong.clear()
thread.join(30)
assert not thread.is_alive()
print(json.dumps(_native.spin_stats()))
"""


def run(code: str, env: dict[str, str] | None = None, prefix: list[str] | None = None) -> str:
    done = subprocess.run(
        [*(prefix or []), sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,  # below pytest-timeout's 120 s, which would leave the child running
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def spin_stats(code: str, **kwargs: object) -> dict[str, int]:
    import json

    last = run(code, **kwargs).strip().splitlines()[-1]  # type: ignore[arg-type]
    stats: dict[str, int] = json.loads(last)
    return stats


def spin_limit(env: dict[str, str], prefix: list[str] | None = None) -> int:
    code = "from mpevent.shm import _native, _parking; print(_native.spin_limit())"
    return int(run(code, env, prefix))


def test_spinning_is_on_by_default_and_off_with_one_cpu_or_a_limit_of_zero() -> None:
    assert spin_limit({"MPEVENT_SPIN": "0"}) == 0
    assert spin_limit({"MPEVENT_SPIN": ""}) == (10000 if TWO_CPUS else 0)
    assert spin_limit({"MPEVENT_SPIN": "1234"}) == (1234 if TWO_CPUS else 0)
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    assert spin_limit({"MPEVENT_SPIN": "1234"}, ["taskset", "-c", "0"]) == 0
    if TWO_CPUS:
        cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0))[:2])
        assert spin_limit({"MPEVENT_SPIN": "1234"}, ["taskset", "-c", cpus]) == 1234


def test_a_ping_pong_never_spins_on_one_cpu_nor_with_a_limit_of_zero() -> None:
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    pinned = spin_stats(PING_PONG, prefix=["taskset", "-c", "0"])
    assert (pinned["limit"], pinned["spun"], pinned["seats"]) == (0, 0, 0)
    off = spin_stats(PING_PONG, env={"MPEVENT_SPIN": "0"})
    assert (off["limit"], off["spun"]) == (0, 0)


@needs_two_cpus
def test_a_ping_pong_that_spins_loses_no_wakeup() -> None:
    # 2,000 rounds each way complete (every wait asserts True within 30 s),
    # whichever way each wait went: spun and won, spun and parked, or parked.
    stats = spin_stats(PING_PONG, env={"MPEVENT_SPIN": "10000"})
    decisions = sum(stats[key] for key in ("spun", "same_cpu", "no_seat", "low_budget"))
    assert decisions + stats["after_wake"] > 0
    assert stats["won"] <= stats["spun"]


@needs_two_cpus
def test_a_waiter_on_the_cpu_of_the_last_set_parks_without_spinning() -> None:
    stats = spin_stats(
        """
        import json, os, mpevent
        from mpevent.shm import _native
        first, second = sorted(os.sched_getaffinity(0))[:2]
        event = mpevent.Event()
        os.sched_setaffinity(0, {first})
        event.set()
        event.clear()
        before = _native.spin_stats()
        assert event.wait(0.01) is False  # on the setter's CPU: no spin
        same = _native.spin_stats()
        os.sched_setaffinity(0, {second})
        assert event.wait(0.01) is False  # elsewhere: it spins (and nobody sets)
        after = _native.spin_stats()
        print(json.dumps({
            "same_cpu": same["same_cpu"] - before["same_cpu"],
            "spun_there": same["spun"] - before["spun"],
            "spun_elsewhere": after["spun"] - same["spun"],
            "won": after["won"] - before["won"],
        }))
        """,
        env={"MPEVENT_SPIN": "1000"},
    )
    assert stats == {"same_cpu": 1, "spun_there": 0, "spun_elsewhere": 1, "won": 0}


@needs_two_cpus
def test_a_waiter_whose_last_set_woke_a_sleeper_parks_without_spinning() -> None:
    stats = spin_stats(
        """
        import json, threading, time, mpevent
        from mpevent.shm import _native
        woken, other = mpevent.Event(), mpevent.Event()
        sleeper = threading.Thread(target=woken.wait)
        sleeper.start()
        deadline = time.monotonic() + 20
        while woken._record.info()["waiters"] == 0:  # queued: about to sleep or asleep
            assert time.monotonic() < deadline
        woken.set()  # wakes a parked waiter, which may come to this CPU
        before = _native.spin_stats()
        assert other.wait(0.01) is False
        after = _native.spin_stats()
        sleeper.join(30)
        assert not sleeper.is_alive()
        print(json.dumps({key: after[key] - before[key] for key in ("after_wake", "spun")}))
        """,
        env={"MPEVENT_SPIN": "1000"},
    )
    assert stats == {"after_wake": 1, "spun": 0}


@needs_two_cpus
def test_waiters_beyond_the_free_seats_park_at_once() -> None:
    stats = spin_stats(
        """
        import json, threading, time, mpevent
        from mpevent.shm import _native
        event = mpevent.Event()
        arena = event._record.arena.native
        seats = _native.spin_stats()["seats"]
        threads = [threading.Thread(target=event.wait) for _ in range(seats + 3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        most = 0
        decided = lambda: sum(_native.spin_stats()[key] for key in ("spun", "no_seat"))
        while decided() < len(threads):  # a spin of this limit lasts seconds
            most = max(most, arena.spinners())
            assert time.monotonic() < deadline
        most = max(most, arena.spinners())
        event.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
        stats = _native.spin_stats()
        print(json.dumps({"seats": seats, "most": most, "no_seat": stats["no_seat"],
                          "spun": stats["spun"], "won": stats["won"]}))
        """,
        env={"MPEVENT_SPIN": "100000000"},
    )
    # Never more spinners than seats; the waiters that came while the seats
    # were taken parked at once.
    assert 1 <= stats["most"] <= stats["seats"]
    assert stats["spun"] >= 1
    assert stats["no_seat"] >= 1


@needs_two_cpus
def test_a_spinner_killed_in_its_seat_frees_it_by_the_clock() -> None:
    event = mpevent.Event()
    arena = event._record.arena.native
    assert arena.spinners() == 0
    child = subprocess.Popen(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read()).wait()"],
        stdin=subprocess.PIPE,
        env={**os.environ, "MPEVENT_SPIN": "100000000"},  # about two seconds of spinning
    )
    try:
        assert child.stdin is not None
        child.stdin.write(pickle.dumps(event))
        child.stdin.close()
        deadline = time.monotonic() + 20
        while arena.spinners() == 0:
            assert time.monotonic() < deadline, "the child never took a seat"
            assert child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        deadline = time.monotonic() + 5
        while arena.spinners() != 0:  # a seat's lease is 5 ms
            assert time.monotonic() < deadline, "the dead spinner's seat was never freed"
        # A fresh waiter of the arena finds the seat free and spins in it.
        code = f"""
            import json, pickle
            from mpevent.shm import _native
            event = pickle.loads({pickle.dumps(event)!r})
            assert event.wait(0.01) is False
            print(json.dumps(_native.spin_stats()))
            """
        assert spin_stats(code, env={"MPEVENT_SPIN": "1000"})["spun"] == 1
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)


def test_a_malformed_spin_limit_is_an_error_that_names_it() -> None:
    for text in ("lots", "-5", "100000001"):
        done = subprocess.run(
            [sys.executable, "-c", "import mpevent"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MPEVENT_SPIN": text},
        )
        assert done.returncode != 0
        assert f"MPEVENT_SPIN={text!r} is not a count" in done.stderr


@needs_two_cpus
def test_a_record_whose_spins_keep_missing_is_waited_on_without_spinning() -> None:
    # A broadcast's waiters, or a slow result's: every spin would miss.
    stats = spin_stats(
        """
        import json, mpevent
        from mpevent.shm import _native
        event = mpevent.Event()
        for _ in range(4):
            assert event.wait(0.001) is False  # each spins its window and misses
        before = _native.spin_stats()
        assert event.wait(0.001) is False
        after = _native.spin_stats()
        print(json.dumps({key: after[key] - before[key] for key in ("record_misses", "spun")}))
        """,
        env={"MPEVENT_SPIN": "1000"},
    )
    assert stats == {"record_misses": 1, "spun": 0}
