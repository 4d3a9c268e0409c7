"""A container-sized /dev/shm: running out is a MemoryError, never a bus error.

Each test runs a script in a private mount namespace (``unshare -m``) with
a small tmpfs mounted on /dev/shm, as a container's default /dev/shm is.
That needs root, which CI has.  Spilling is off here: these are the
MemoryErrors a value meets without it (tests/shm/test_spill.py spills).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from conftest import in_mount_namespace

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private tmpfs on /dev/shm (CI has both)",
)


def _run_in_small_shm(script: str, size: str = "16m") -> subprocess.CompletedProcess[str]:
    done = in_mount_namespace(
        f"mount -t tmpfs -o size={size} tmpfs /dev/shm", script, MPEVENT_SPILL_DIR="off"
    )
    assert done.returncode != -signal.SIGBUS, "a bus error: a page was touched unreserved"
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_events_waits_and_small_values_work_in_16_mib() -> None:
    done = _run_in_small_shm(
        """
        import multiprocessing as mp
        import mpevent

        def child(go, out):
            go.wait(30)
            out.set({"answer": 42, "blob": b"x" * 50_000})

        if __name__ == "__main__":
            events = [mpevent.Event() for _ in range(10_000)]
            go, out = events[0], mpevent.AsyncResult()
            process = mp.get_context("fork").Process(target=child, args=(go, out))
            process.start()
            go.set()
            assert out.get(timeout=30)["answer"] == 42
            process.join(30)
            assert process.exitcode == 0
            print("ok")
        """
    )
    assert done.stdout.strip() == "ok"


@pytest.mark.needs_populate  # a full tmpfs must be seen before a page is touched
def test_creating_events_until_dev_shm_is_full_raises_and_changes_nothing() -> None:
    done = _run_in_small_shm(
        """
        import gc
        import mpevent

        first = mpevent.Event()
        assert not first.wait(0.001)  # this thread's waiter slot
        events = []
        try:
            while True:
                events.append(mpevent.Event())
        except MemoryError as exc:
            print("refused:", exc)
        count = len(events)
        first.set()
        assert first.wait(1) and first.is_set()
        events[-1].set()
        assert events[-1].is_set()
        del events[: count // 2]
        gc.collect()
        again = [mpevent.Event() for _ in range(count // 4)]  # freed records are reused
        print("created", count, "then", len(again))
        """
    )
    assert "refused: /dev/shm is full" in done.stdout
    assert "--shm-size" in done.stdout and "MPEVENT_MAX_SHM" in done.stdout
    created = int(done.stdout.split("created ")[1].split()[0])
    assert created > 10_000


@pytest.mark.needs_populate  # a full tmpfs must be seen before a page is touched
def test_a_value_larger_than_dev_shm_raises_and_the_result_stays_unset() -> None:
    done = _run_in_small_shm(
        """
        import mpevent

        other = mpevent.AsyncResult()
        other.set(b"small")
        result = mpevent.AsyncResult()
        try:
            result.set(b"x" * (32 << 20))
        except MemoryError as exc:
            print("refused:", exc)
        assert not result.ready()
        result.set(b"y" * (4 << 20))  # a value that fits works at once
        assert result.get() == b"y" * (4 << 20)
        assert other.get() == b"small"
        event = mpevent.Event()
        event.set()
        assert event.wait(1)
        print("alive")
        """
    )
    assert "refused: /dev/shm is full: a value needs" in done.stdout
    assert done.stdout.rstrip().endswith("alive")


@pytest.mark.needs_populate  # a full tmpfs must be seen before a page is touched
def test_a_waiter_slot_that_does_not_fit_raises_in_its_thread_only() -> None:
    done = _run_in_small_shm(
        """
        import os, threading
        import mpevent

        event = mpevent.Event()
        # Fill /dev/shm, leaving less than the next chunk of waiter slots.
        stat = os.statvfs("/dev/shm")
        fd = os.open("/dev/shm/filler", os.O_RDWR | os.O_CREAT, 0o600)
        os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize - 16384)
        errors = []

        def waiter():
            try:
                errors.append(event.wait(0.01))
            except MemoryError as exc:
                errors.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(30)
        print("first:", errors[0])
        os.close(fd)
        os.unlink("/dev/shm/filler")
        thread = threading.Thread(target=waiter)
        thread.start()
        event.set()
        thread.join(30)
        print("second:", errors[1])
        """
    )
    assert "first: /dev/shm is full: a waiter slot needs" in done.stdout
    assert "second: True" in done.stdout


@pytest.mark.needs_populate  # a full tmpfs must be seen before a page is touched
def test_waiting_on_set_objects_works_when_dev_shm_is_full() -> None:
    # The scenario of a user whose /dev/shm filled up: a thread that never
    # waited before has no waiter slot, and there is no room for one; waits
    # on set objects must still answer, as nothing sleeps.
    done = _run_in_small_shm(
        """
        import gc, threading
        import mpevent

        result = mpevent.AsyncResult()
        result.set({"ready": True})
        events = []
        try:
            while True:
                events.append(mpevent.Event())
        except MemoryError:
            pass
        del events[: len(events) // 2]
        gc.collect()

        outcome = []

        def fresh_thread():
            e = mpevent.Event()
            e.set()
            outcome.append(e.wait(1))
            outcome.append(result.get(timeout=1))
            outcome.append(len(mpevent.wait([e, result], timeout=1)))
            outcome.append(e.wait())

        thread = threading.Thread(target=fresh_thread)
        thread.start()
        thread.join(30)
        print(outcome)
        """,
        size="32m",
    )
    assert done.stdout.strip() == "[True, {'ready': True}, 2, True]"
