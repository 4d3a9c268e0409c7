"""Handing the CPU over after a wake: when a set() yields, and when it must not.

The rule is ``handover_after_wake`` (src/native/spin.c): after waking a
waiter of another process, yield when nothing else on the machine is
runnable.  Each test runs in a fresh interpreter and reads that process's
count of hand-overs from ``_native.spin_stats()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_spinning import TWO_CPUS, needs_two_cpus, run, spin_stats


def handover_on(env: dict[str, str], prefix: list[str] | None = None) -> bool:
    code = "from mpevent.shm import _native, _parking; print(_native.spin_stats()['handover'])"
    return run(code, env, prefix).strip() == "1"


def test_handing_over_is_on_by_default_and_off_on_one_cpu_or_when_turned_off() -> None:
    assert handover_on({"MPEVENT_HANDOVER": ""}) == TWO_CPUS
    assert handover_on({"MPEVENT_HANDOVER": "1"}) == TWO_CPUS
    assert not handover_on({"MPEVENT_HANDOVER": "0"})
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    assert not handover_on({"MPEVENT_HANDOVER": "1"}, ["taskset", "-c", "0"])


def test_a_malformed_handover_switch_is_an_error_that_names_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import mpevent; mpevent.Event().set()"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MPEVENT_HANDOVER": "yes"},
    )
    assert done.returncode != 0
    assert "MPEVENT_HANDOVER='yes' is not a switch" in done.stderr


# Wakes of waiters parked in a forked child, then of a thread of this
# process; prints the hand-overs each made.  A cross-process wake hands
# over only when the machine has nothing else runnable at that moment, so
# it takes 20 of them.
WAKES = """
import json, os, threading, time, mpevent
from mpevent.shm import _native

def parked(event):
    deadline = time.monotonic() + 20
    while event._record.info()["waiters"] == 0:
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.001)

def handovers():
    return _native.spin_stats()["handovers"]

events = [mpevent.Event() for _ in range(20)]
child = os.fork()
if child == 0:
    for event in events:
        event.wait(30)
    os._exit(0)
before = handovers()
for event in events:
    parked(event)
    event.set()
elsewhere = handovers() - before
assert os.waitpid(child, 0)[1] == 0

event = mpevent.Event()
thread = threading.Thread(target=event.wait, args=(30,))
thread.start()
parked(event)
before = handovers()
event.set()
ours = handovers() - before
thread.join(30)
assert not thread.is_alive()
print(json.dumps({"elsewhere": elsewhere, "ours": ours}))
"""


@needs_two_cpus
def test_a_set_that_wakes_another_process_hands_over_and_one_that_wakes_its_own_thread_not() -> (
    None
):
    stats = spin_stats(WAKES, env={"MPEVENT_SPIN": "0", "MPEVENT_HANDOVER": "1"})
    assert stats["elsewhere"] >= 1, stats  # the machine was quiet at least once in 20
    assert stats["ours"] == 0, stats  # a thread of ours needs this one's GIL first


def test_with_handing_over_off_no_set_yields() -> None:
    stats = spin_stats(WAKES, env={"MPEVENT_SPIN": "0", "MPEVENT_HANDOVER": "0"})
    assert stats == {"elsewhere": 0, "ours": 0}


@needs_two_cpus
def test_no_set_yields_while_another_task_is_runnable() -> None:
    # A busy loop per CPU is always runnable: a yield could give it the
    # setter's time slice, so none is made.
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(len(os.sched_getaffinity(0)))
    ]
    try:
        stats = spin_stats(WAKES, env={"MPEVENT_SPIN": "0", "MPEVENT_HANDOVER": "1"})
    finally:
        for loop in loops:
            loop.kill()
            loop.wait(10)
    assert stats == {"elsewhere": 0, "ours": 0}
