"""Neighbours in other PID namespaces that share /dev/shm (containers with --ipc=host).

Each neighbour is a Python process started through ``unshare --pid --fork
--mount-proc``: pid 1 of a PID namespace of its own, as the first process
of a container is.  Root only; skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _arena, _segment


def _unshare_works() -> str | None:
    if os.geteuid() != 0:
        return "needs root (unshare --pid); CI runs it as root"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        return f"unshare --pid is not allowed here: {probe.stderr.decode().strip()}"
    return None


_why_not = _unshare_works()
needs_unshare = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


# The namespace's init is a shell, so Python runs as pid 2: a process can
# SIGKILL itself there (init ignores signals from inside its namespace).
UNDER_INIT = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$0" -c "$@"']


def neighbour(code: str, pid: int = 1) -> subprocess.Popen[str]:
    """Start *code* as *pid* (1 or 2) of a new PID namespace, sharing our /dev/shm."""
    program = f"import os\nassert os.getpid() == {pid}, os.getpid()\n" + textwrap.dedent(code)
    if pid == 1:
        command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", program]
    else:
        command = [*UNDER_INIT, sys.executable, program]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a neighbour; its output, or a failure with its stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, f"neighbour failed ({process.returncode}):\n{err}"
    return out


def _read_and_set(result: mpevent.AsyncResult, done: mpevent.Event) -> None:
    assert result.get(timeout=10) == b"ours" * 1000
    done.set()


@needs_unshare
def test_a_neighbours_first_object_leaves_our_arena_and_children_alone(
    processes: ProcessRunner,
) -> None:
    result, done = mpevent.AsyncResult(), mpevent.Event()
    result.set(b"ours" * 1000)
    ours = result._record.arena.name
    # Its first Event cleans /dev/shm before creating an arena of its own.
    out = finish(
        neighbour("""
        import mpevent
        event = mpevent.Event()
        event.set()
        print(event._record.arena.name)
        """)
    )
    assert out.strip() != ours
    assert os.path.exists(_segment.path_of(ours))
    assert not os.path.exists(_segment.path_of(out.strip()))  # it unlinked its own at exit
    child = processes.start(_read_and_set, result, done, method="spawn")
    assert done.wait(60)
    processes.join(child)
    assert result.get() == b"ours" * 1000


@needs_unshare
def test_a_neighbour_that_opens_our_names_and_makes_results_frees_nothing_of_ours() -> None:
    name = f"ns-ours-{secrets.token_hex(4)}"
    named = mpevent.AsyncResult(name, create=True)
    named.set(list(range(1000)))
    unnamed = mpevent.AsyncResult()
    unnamed.set(b"mine" * 50_000)
    arena = named._record.arena
    refs_before = (named._record.info()["refcount"], unnamed._record.info()["refcount"])
    try:
        out = finish(
            neighbour(f"""
            import mpevent
            theirs = mpevent.AsyncResult.open({name!r})
            assert theirs.get(timeout=10) == list(range(1000))
            made = [mpevent.AsyncResult() for _ in range(20)]
            for n, result in enumerate(made):
                result.set(bytes(n * 10_000))
            print(theirs._record.arena.name, made[0]._record.arena.name)
            """)
        )
        assert out.split() == [arena.name, arena.name]  # it joined ours and allocated there
        assert named.get() == list(range(1000))
        assert unnamed.get() == b"mine" * 50_000
        assert (named._record.info()["refcount"], unnamed._record.info()["refcount"]) == (
            refs_before
        )
        assert arena.native.statistics()["records_live"] >= 2
    finally:
        named.remove_name()


HOLDER = """
import sys, mpevent
value = mpevent.AsyncResult({name!r}, create=True)
value.set(b"theirs" * 100_000)
stop = mpevent.Event({stop!r}, create=True)
print(value._record.arena.name, flush=True)
assert stop.wait(120)
assert value.get() == b"theirs" * 100_000  # still whole after everyone's reclaiming
value.remove_name()
stop.remove_name()
"""

VISITOR = """
import mpevent
from mpevent.shm import _arena
value = mpevent.AsyncResult.open({name!r})
assert value.get(timeout=10) == b"theirs" * 100_000
_arena.clean()
for arena in _arena.attached():
    arena.reclaim_dead_processes()
"""


def _visit(name: str) -> None:
    value = mpevent.AsyncResult.open(name)
    assert value.get(timeout=10) == b"theirs" * 100_000


@needs_unshare
def test_a_live_neighbour_is_never_taken_for_dead(processes: ProcessRunner) -> None:
    name, stop = f"ns-held-{secrets.token_hex(4)}", f"ns-stop-{secrets.token_hex(4)}"
    holder = neighbour(HOLDER.format(name=name, stop=stop))
    try:
        assert holder.stdout is not None
        their_arena = holder.stdout.readline().strip()
        assert their_arena.startswith("mpevent-1-"), their_arena  # pid 1 of its namespace
        for _ in range(2):  # siblings, each pid 1 too, join, read and clean
            finish(neighbour(VISITOR.format(name=name)))
        cleaner = subprocess.run(
            [sys.executable, "-m", "mpevent", "clean"], capture_output=True, text=True, timeout=60
        )
        assert cleaner.returncode == 0, cleaner.stderr
        assert their_arena not in cleaner.stdout
        for method in ("spawn", "fork"):  # and processes of ours
            child = processes.start(_visit, name, method=method)
            assert processes.join(child) == 0
        _visit(name)
        assert os.path.exists(_segment.path_of(their_arena))
        mpevent.Event.open(stop).set()
        finish(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


KILLED_SETTER = """
import os, signal, mpevent
result = mpevent.AsyncResult.open({name!r})
result.set(bytes(16 << 20))
os.kill(os.getpid(), signal.SIGKILL)
"""

ROUNDS = """
import os, signal, subprocess, sys, mpevent
setter = sys.argv[1]
rounds = 0
for n in range(12):
    name = f"{prefix}-{n}"
    result = mpevent.AsyncResult(name, create=True)
    child = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$0" -c "$1"',
         sys.executable, setter.format(name=name)],
        capture_output=True, text=True, timeout=60,
    )
    assert child.returncode == -signal.SIGKILL or child.returncode == 128 + signal.SIGKILL, (
        n, child.returncode, child.stderr)
    assert len(result.get(timeout=10)) == 16 << 20, n
    result.remove_name()
    del result
    rounds += 1
print(rounds)
"""


@needs_unshare
def test_neighbours_killed_in_their_own_namespaces_are_still_reclaimed() -> None:
    prefix = f"ns-round-{secrets.token_hex(4)}"
    program = ROUNDS.replace("{prefix}", prefix)
    run = subprocess.run(
        [sys.executable, "-c", program, KILLED_SETTER],
        capture_output=True,
        text=True,
        timeout=300,
        # Spilling off: the values must fit because the dead neighbours are reclaimed.
        env={**os.environ, "MPEVENT_MAX_SHM": "64M", "MPEVENT_SPILL_DIR": "off"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "12"  # each round found room: the killed were reclaimed


@needs_unshare
def test_the_arena_of_a_neighbour_killed_in_its_namespace_is_cleaned() -> None:
    killed = neighbour(
        """
        import mpevent, os, signal
        event = mpevent.Event()
        print(event._record.arena.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        pid=2,
    )
    out, _ = killed.communicate(timeout=60)
    assert killed.returncode == 128 + 9, killed.returncode  # the shell saw it killed
    orphan = out.strip()
    assert orphan.startswith("mpevent-2-") and os.path.exists(_segment.path_of(orphan))
    assert orphan in _arena.clean()  # nobody holds a lock on it: the kernel says so
    assert not os.path.exists(_segment.path_of(orphan))
    for arena in _arena.attached():  # ours are alive and untouched
        assert os.path.exists(_segment.path_of(arena.name))


def test_a_child_that_execs_inherits_no_descriptor_of_an_arena() -> None:
    # Not a namespace test, but the same rule: liveness must not leak into
    # programs we run.  Runs without root.
    mpevent.Event()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        os.dup2(write, 1)
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-c",
                "import os; print([os.readlink(f'/proc/self/fd/{fd}') "
                "for fd in os.listdir('/proc/self/fd') if os.path.exists(f'/proc/self/fd/{fd}')])",
            ],
        )
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "/dev/shm/mpevent-" not in seen, seen


CLAIMER = """
import os, signal, sys, mpevent
result = mpevent.AsyncResult.open(sys.argv[1])
result.claim()
print("claimed", flush=True)
sys.stdin.readline()  # until the parent waits
os.kill(os.getpid(), signal.SIGKILL)
"""


@needs_unshare
def test_a_result_claimed_in_another_namespace_fails_when_its_claimer_is_killed() -> None:
    import time

    name = f"ns-claimed-{secrets.token_hex(4)}"
    result = mpevent.AsyncResult(name, create=True)
    claimer = subprocess.Popen(
        [*UNDER_INIT, sys.executable, CLAIMER, name],  # pid 2 of its own namespace
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert claimer.stdout is not None and claimer.stdin is not None
        assert claimer.stdout.readline().strip() == "claimed"
        claimer.stdin.write("go\n")
        claimer.stdin.flush()
        assert claimer.wait(30) == 128 + 9  # the shell saw it killed
        killed = time.monotonic()
        with pytest.raises(mpevent.ProcessDied) as raised:
            result.get(timeout=30)
        assert time.monotonic() - killed < 1.5
        assert raised.value.pid == 2 and not raised.value.exited
    finally:
        if claimer.poll() is None:
            claimer.kill()
            claimer.wait(10)
        for stream in (claimer.stdin, claimer.stdout):
            if stream is not None:
                stream.close()
        result.remove_name()
