"""Whole programs: nothing is left in /dev/shm and nothing is reported leaked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mpevent.shm import _segment

PROGRAM = textwrap.dedent(
    """
    import concurrent.futures, multiprocessing as mp, os, threading, time, mpevent

    def child(event, done):
        event.wait(30)
        done.set()

    def worker(event):
        event.set()
        made = mpevent.Event()
        made.set()
        return made

    if __name__ == "__main__":
        for method in ("fork", "spawn", "forkserver"):
            ctx = mp.get_context(method)
            event, done = mpevent.Event(), mpevent.Event()
            p = ctx.Process(target=child, args=(event, done))
            p.start()
            event.set()
            assert done.wait(30)
            p.join(30)
            assert p.exitcode == 0, p.exitcode
            with ctx.Pool(2) as pool:
                pool.apply(worker, (mpevent.Event(),))
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
                assert ex.submit(worker, mpevent.Event()).result(30).is_set()
        # The pools' helper threads may take a moment to end, and an OS thread
        # outlives its Python thread by a little (Python 3.12+ counts OS
        # threads before a fork): wait for them; a thread of ours would stay.
        deadline = time.monotonic() + 10
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(os.listdir("/proc/self/task")) == 1, threading.enumerate()
        pid = os.fork()
        if pid == 0:
            mpevent.Event().set()
            os._exit(0)  # skips every exit hook: its table entry is dead weight
        os.waitpid(pid, 0)
        print("ok")
    """
)


def test_program_leaves_no_segments_and_no_warnings(tmp_path: Path) -> None:
    script = tmp_path / "program.py"  # a file: spawn children re-import __main__
    script.write_text(PROGRAM)
    before = set(_segment.list_names())
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "leaked" not in result.stderr
    assert "resource_tracker" not in result.stderr
    assert result.stderr == ""
    assert set(_segment.list_names()) - before == set()


KILLING_PROGRAM = textwrap.dedent(
    """
    import os, random, signal, time, mpevent

    if __name__ == "__main__":
        rng = random.Random(7)
        event, result = mpevent.Event(), mpevent.AsyncResult()
        result.set(b"v" * 100_000)  # a value segment of its own
        for n in range(20):
            pid = os.fork()
            if pid == 0:  # a child that works until it is killed
                mine = mpevent.AsyncResult()
                mine.set(b"c" * 100_000)
                while True:
                    event.wait(0.001)
                    result.get()
            time.sleep(rng.uniform(0, 0.02))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        print("ok")
    """
)


def test_program_whose_children_are_killed_leaves_nothing(tmp_path: Path) -> None:
    script = tmp_path / "killing.py"
    script.write_text(KILLING_PROGRAM)
    before = set(_segment.list_names())
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert set(_segment.list_names()) - before == set()


ORDER_PROGRAM = """
import os, mpevent, mpevent.redis
from mpevent import _lifecycle
seen = []
for (phase, part), hook in list(_lifecycle._hooks.items()):
    def wrapped(hook=hook, phase=phase, part=part):
        seen.append(f"{phase}:{part}")
        hook()
    _lifecycle._hooks[phase, part] = wrapped
event = mpevent.Event()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, " ".join(seen).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 4096).decode())
print(" ".join(seen))
"""


def test_fork_hooks_run_once_each_in_the_written_order() -> None:
    import subprocess
    import sys

    from mpevent import _lifecycle

    run = subprocess.run(
        [sys.executable, "-c", ORDER_PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    child, parent = run.stdout.splitlines()
    before = [f"before:{part}" for part in _lifecycle.BEFORE_FORK]
    assert child.split() == before + [f"child:{p}" for p in _lifecycle.AFTER_FORK_IN_CHILD]
    assert parent.split() == before + [f"parent:{p}" for p in _lifecycle.AFTER_FORK_IN_PARENT]


def test_a_part_outside_the_written_order_is_refused() -> None:
    from mpevent import _lifecycle

    with pytest.raises(ValueError, match="no place in the order"):
        _lifecycle.on_fork("newcomer", after_in_child=lambda: None)
    with pytest.raises(ValueError, match="no place in the order"):
        _lifecycle.at_exit("newcomer", lambda: None)
