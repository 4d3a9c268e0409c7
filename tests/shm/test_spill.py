"""Spilling: values that shared memory cannot hold go to disk, and come back whole.

Each test runs a fresh interpreter, so that the environment it sets
(``MPEVENT_MAX_SHM``, ``MPEVENT_SPILL_DIR``) is read by the process that
creates the arena.  The scenarios with a container-sized ``/dev/shm`` or a
full disk mount a small tmpfs in a private mount namespace (root, as CI).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import in_mount_namespace

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private tmpfs (CI has both)",
)


def _run(
    script: str, spill: Path | str | None, cap: str = "8M", timeout: float = 180, **more: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPEVENT_MAX_SHM": cap, **more}
    env.pop("MPEVENT_SPILL_DIR", None)
    if spill is not None:
        env["MPEVENT_SPILL_DIR"] = str(spill)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_a_value_over_the_cap_spills_and_is_read_back_in_another_process(tmp_path: Path) -> None:
    done = _run(
        """
        import os, stat, mpevent
        from mpevent.shm import _arena
        result = mpevent.AsyncResult()
        value = os.urandom(1 << 20) * 16  # 16 MiB: twice the cap
        pid = os.fork()
        if pid == 0:
            result.set(value)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        files = os.listdir(os.environ["MPEVENT_SPILL_DIR"])
        assert len(files) == 1, files
        mode = os.stat(os.path.join(os.environ["MPEVENT_SPILL_DIR"], files[0])).st_mode
        assert stat.S_IMODE(mode) == 0o600, oct(mode)
        assert result.get(timeout=30) == value
        stats = _arena.attached()[0].native.statistics()
        assert stats["spilled_values"] == 1 and stats["spilled_bytes"] > 16 << 20, stats
        result.set(b"small now")  # the spilled value is released: its file goes
        assert os.listdir(os.environ["MPEVENT_SPILL_DIR"]) == []
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []


def test_the_default_spill_directory_is_on_disk_private_and_left_empty(tmp_path: Path) -> None:
    done = _run(
        """
        import os, stat, mpevent
        from mpevent.shm import _spill
        directory = _spill.configured_dir()
        result = mpevent.AsyncResult()
        result.set(b"d" * (16 << 20))
        info = os.stat(directory)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
        assert len(os.listdir(directory)) == 1
        result.close()
        assert os.listdir(directory) == []
        print(directory)
        """,
        None,
        TMPDIR=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / f"mpevent-spill-{os.geteuid()}")


def test_a_spilled_numpy_view_is_zero_copy_and_outlives_its_setter_and_its_file(
    tmp_path: Path,
) -> None:
    pytest.importorskip("numpy")
    done = _run(
        """
        import os, signal, numpy as np, mpevent
        result = mpevent.AsyncResult()
        pid = os.fork()
        if pid == 0:
            result.set(np.arange(4 << 20, dtype=np.int64))  # 32 MiB
            os.kill(os.getpid(), signal.SIGKILL)  # the setter dies
        os.waitpid(pid, 0)
        array = result.get(timeout=30)
        assert not array.flags.writeable and not array.flags.owndata  # a view of the file
        result.set(None)  # the file is unlinked; the mapping keeps its pages
        assert os.listdir(os.environ["MPEVENT_SPILL_DIR"]) == []
        assert array[0] == 0 and array[-1] == (4 << 20) - 1 and int(array.sum()) == (
            (4 << 20) * ((4 << 20) - 1) // 2
        )
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_spill_files_go_when_the_only_holder_is_killed(tmp_path: Path) -> None:
    done = _run(
        """
        import os, signal, time, mpevent
        from mpevent.shm import _arena
        result = mpevent.AsyncResult()
        ready = mpevent.Event()
        pid = os.fork()
        if pid == 0:
            result.set(b"x" * (16 << 20))
            ready.set()
            time.sleep(60)
            os._exit(0)
        assert ready.wait(30)
        assert len(os.listdir(os.environ["MPEVENT_SPILL_DIR"])) == 1
        result.close()  # the child holds the only reference now
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        arena = _arena.attached()[0]
        assert arena.reclaim_dead_processes() == 1  # what anyone short of room does
        assert os.listdir(os.environ["MPEVENT_SPILL_DIR"]) == []
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_writer_killed_while_spilling_publishes_nothing_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    done = _run(
        """
        import os, signal, mpevent
        directory = os.environ["MPEVENT_SPILL_DIR"]
        result = mpevent.AsyncResult()
        pid = os.fork()
        if pid == 0:
            result.set(b"y" * (256 << 20))  # killed somewhere in here
            os._exit(0)

        def writing():  # the child has its (still unnamed) spill file open
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(directory)
                           for fd in fds)
            except OSError:
                return False
        while not writing() and not result.ready():
            pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # Either nothing was published, or all of it was.
        if result.ready():
            assert len(result.get()) == 256 << 20
            result.set(None)
        assert not os.listdir(directory), os.listdir(directory)
        print("ok", result.ready())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_clean_removes_the_spill_files_of_an_abandoned_arena_and_orphans(tmp_path: Path) -> None:
    # A process that ends by os._exit() leaves its arena and its spill file.
    left = _run(
        """
        import os, mpevent
        result = mpevent.AsyncResult()
        result.set(b"z" * (16 << 20))
        os._exit(0)
        """,
        tmp_path,
    )
    assert left.returncode == 0, left.stderr
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    clean = subprocess.run(
        [sys.executable, "-m", "mpevent", "clean"], capture_output=True, text=True, timeout=60
    )
    assert clean.returncode == 0, clean.stderr
    assert str(files[0]) in clean.stdout
    assert list(tmp_path.iterdir()) == []


def test_an_orphan_spill_file_of_a_live_arena_is_removed_by_clean(tmp_path: Path) -> None:
    done = _run(
        """
        import os, subprocess, sys, time, mpevent
        from mpevent.shm import _arena, _spill
        result = mpevent.AsyncResult()
        result.set(b"k" * (16 << 20))  # a published file: must stay
        arena = _arena.attached()[0]
        directory, name = arena.native.spill_settings()
        orphan = os.path.join(directory, _spill.file_name(name, 12345))
        with open(orphan, "wb") as f:  # what a writer killed before publishing leaves
            f.write(b"half")
        old = time.time() - 2 * _spill.ORPHAN_AGE
        os.utime(orphan, (old, old))
        young = os.path.join(directory, _spill.file_name(name, 777))
        open(young, "wb").close()  # maybe a writer about to lock it: left alone
        clean = subprocess.run([sys.executable, "-m", "mpevent", "clean"],
                               capture_output=True, text=True, timeout=60)
        assert clean.returncode == 0, clean.stderr
        assert orphan in clean.stdout and not os.path.exists(orphan), clean.stdout
        assert os.path.exists(young)
        os.unlink(young)
        assert result.get() == b"k" * (16 << 20)  # the published one is untouched
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_replaced_or_exposed_spill_file_is_refused(tmp_path: Path) -> None:
    done = _run(
        """
        import os, pickle, mpevent
        directory = os.environ["MPEVENT_SPILL_DIR"]
        result = mpevent.AsyncResult()
        result.set(b"r" * (16 << 20))
        (name,) = os.listdir(directory)
        path = os.path.join(directory, name)
        os.chmod(path, 0o644)  # readable by others: not trusted
        try:
            result.get()
        except PermissionError as exc:
            assert "not the one this result names" in str(exc), exc
        else:
            raise AssertionError("a file readable by others was read")
        os.chmod(path, 0o600)
        assert result.get() == b"r" * (16 << 20)
        os.unlink(path)  # replaced: same name, another file
        with open(path, "wb") as f:
            f.write(b"evil" * (4 << 20))
        os.chmod(path, 0o600)
        fresh = pickle.loads(pickle.dumps(result))  # a handle that has read nothing yet
        try:
            fresh.get()
        except PermissionError:
            print("refused")
        result.set(None)
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "ok"]


def test_a_missing_spill_directory_is_an_error_at_the_first_spill_not_before(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "not-there"
    done = _run(
        """
        import mpevent
        result = mpevent.AsyncResult()
        result.set(b"fits")  # small values never look at the spill directory
        try:
            result.set(b"m" * (16 << 20))
        except MemoryError as exc:
            assert "does not exist" in str(exc) and "MPEVENT_SPILL_DIR" in str(exc), exc
            print("refused")
        assert result.get() == b"fits"  # nothing changed
        """,
        missing,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"
    assert not missing.exists()


def test_spilling_off_keeps_the_memory_error(tmp_path: Path) -> None:
    done = _run(
        """
        import mpevent
        result = mpevent.AsyncResult()
        try:
            result.set(b"o" * (16 << 20))
        except MemoryError as exc:
            assert "spilling to disk is off" in str(exc) and "MPEVENT_MAX_SHM" in str(exc), exc
            print("refused", result.ready())
        """,
        "off",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused False"


def test_list_shows_what_is_spilled(tmp_path: Path) -> None:
    done = _run(
        """
        import subprocess, sys, mpevent
        result = mpevent.AsyncResult()
        result.set(b"l" * (16 << 20))
        listed = subprocess.run([sys.executable, "-m", "mpevent", "list"],
                                capture_output=True, text=True, timeout=60)
        print(listed.stdout)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert f"spilled to disk: 1 values, 16.0 MiB in {tmp_path}" in done.stdout, done.stdout


@pytest.mark.needs_populate  # a full tmpfs must be seen before a page is touched
@ROOT_ONLY
def test_a_256_mib_array_crosses_a_container_sized_dev_shm(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    script = textwrap.dedent(
        """
        import os, numpy as np, mpevent
        result = mpevent.AsyncResult()
        pid = os.fork()
        if pid == 0:
            result.set(np.full(32 << 20, 7, dtype=np.int64))  # 256 MiB through 64 MiB
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        array = result.get(timeout=60)
        assert array.nbytes == 256 << 20 and int(array[::4096].sum()) == 7 * (8 << 10)
        assert len(os.listdir(os.environ["MPEVENT_SPILL_DIR"])) == 1
        del array
        result.close()
        print("ok")
        """
    )
    done = in_mount_namespace(
        "mount -t tmpfs -o size=64m tmpfs /dev/shm", script, MPEVENT_SPILL_DIR=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []  # the last leaver took the file with the arena


@ROOT_ONLY
def test_a_full_disk_is_a_memory_error_that_changes_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, mpevent
        result = mpevent.AsyncResult()
        result.set(b"before")
        disk = os.environ["MPEVENT_SPILL_DIR"]
        with open(os.path.join(disk, "filler"), "wb") as f:  # the disk fills up
            f.write(b"f" * (7 << 20))
        try:
            result.set(b"d" * (16 << 20))
        except MemoryError as exc:
            text = str(exc)
            assert "MPEVENT_MAX_SHM" in text and "is full too" in text, text
            print("refused")
        assert result.get() == b"before"
        assert os.listdir(disk) == ["filler"]  # no half-written file
        """
    )
    disk = str(tmp_path)
    done = in_mount_namespace(
        f"mount -t tmpfs -o size=8m tmpfs {shlex.quote(disk)}",
        script,
        MPEVENT_SPILL_DIR=disk,
        MPEVENT_MAX_SHM="4M",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"


def test_a_reader_that_cannot_see_the_spill_file_is_told_why(tmp_path: Path) -> None:
    done = _run(
        """
        import os, pickle, mpevent
        directory = os.environ["MPEVENT_SPILL_DIR"]
        result = mpevent.AsyncResult()
        result.set(b"v" * (16 << 20))
        (name,) = os.listdir(directory)
        os.unlink(os.path.join(directory, name))  # as if this container saw another disk
        try:
            pickle.loads(pickle.dumps(result)).get()
        except FileNotFoundError as exc:
            assert "same spill directory" in str(exc) and name in str(exc), exc
            print("told")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "told"
