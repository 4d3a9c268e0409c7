"""Shared fixtures: every test module is checked for leaks, processes are reaped."""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import mpevent
from mpevent.shm import _arena, _loop, _native, _segment, _spill

if os.environ.get("MPEVENT_TEST_INSTALLED"):
    # The release check tests the installed wheel: never the checkout.
    _checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.dirname(os.path.abspath(mpevent.__file__)) == os.path.join(_checkout, "mpevent"):
        raise RuntimeError(f"the tests imported the checkout's mpevent ({mpevent.__file__})")

START_METHODS = ["fork", "spawn", "forkserver"]
CONTRACT_AUTHKEY = "contract-test-key"


def _held_by_a_live_process(name: str) -> bool:
    """Whether a live process maps the segment: its liveness locks (OFD) say so."""
    try:
        fd = os.open(os.path.join(_segment.SHM_DIR, name), os.O_RDWR)
    except OSError:
        return False  # gone meanwhile, or not ours to open
    try:
        return _native.ofd_held(fd, 0, 0)  # any byte, to the end of the file
    finally:
        os.close(fd)


def _foreign_segments() -> set[str]:
    """mpevent segments in /dev/shm that no live process holds: what a leak leaves.

    Left out: this process's own arenas and their value segments (spares
    are kept for reuse while an arena lives, and have tests of their own),
    and segments a live process maps -- another test run, a demo -- found
    by the liveness locks every mapping process holds, not by pid: two runs
    side by side never see each other's arenas as leaks.
    """
    mine = tuple(arena.name for arena in _arena.attached())
    found = set()
    for name in _segment.list_names():
        # A name (mpevent-name.*) belongs with the arena it points into.
        arena = _named_arena(name) if name.startswith(_segment.NAME_PREFIX) else name
        if arena is not None and not arena.startswith(mine) and _held_by_a_live_process(arena):
            continue  # another run's, or a demo's
        if arena is not None and name == arena and arena.startswith(mine):
            continue  # this process's own arena
        found.add(name)
    return found


def _named_arena(name: str) -> str | None:
    """The arena a name file points into, or None if it cannot be read."""
    try:
        with open(os.path.join(_segment.SHM_DIR, name)) as file:
            return str(json.load(file)["arena"])
    except (OSError, ValueError, KeyError):
        return None


def _lasting(found: Callable[[], set[str]], within: float = 2.0) -> set[str]:
    """What *found* still reports after *within* seconds.

    multiprocessing unlinks a named semaphore right after creating it: one
    seen for an instant belongs to whichever run (this one, or another side
    by side) is creating a lock at that moment.  A leak stays.
    """
    deadline = time.monotonic() + within
    names = found()
    while names and time.monotonic() < deadline:
        time.sleep(0.05)
        names &= found()
    return names


def wait_for_waiters(obj: Any, count: int, timeout: float = 30) -> None:
    """Block until *count* waiters are queued on a shared-memory object.

    Reads the record's public statistics (``Record.info``, what ``python -m
    mpevent list`` shows), so a test that a set() wakes a waiter knows the
    waiter is asleep first.  Fails the test after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while obj._record.info()["waiters"] < count:
        assert time.monotonic() < deadline, f"{count} waiters never queued"
        time.sleep(0.001)


def _named_semaphores() -> set[str]:
    return {name for name in os.listdir(_segment.SHM_DIR) if name.startswith("sem.")}


@pytest.fixture(autouse=True, scope="module")
def no_leaks_per_module() -> Iterator[None]:
    """After each test module: no new segments or named semaphores, fds as before."""
    process = psutil.Process()
    children_before = {child.pid for child in process.children(recursive=True)}
    segments_before = _foreign_segments()
    semaphores_before = _named_semaphores()
    spilled_before = _spill_files()
    gc.collect()
    # Each arena this process is attached to holds one descriptor (its
    # liveness lock), however many objects it has: those are not leaks.
    loops = _loop.descriptors()  # first: it closes the ended loops' descriptors
    fds_before = process.num_fds() - len(_arena.attached()) - loops
    yield
    gc.collect()
    for child in process.children(recursive=True):
        if child.pid in children_before:
            continue
        # Pool and executor helpers may still be winding down: give them a moment.
        try:
            child.wait(timeout=10)
        except psutil.TimeoutExpired:
            child.kill()
            pytest.fail(f"test module left a live child process {child.pid}")
        except psutil.NoSuchProcess:
            pass
    leaked = _foreign_segments() - segments_before
    assert not leaked, f"segments left in /dev/shm: {sorted(leaked)}"
    semaphores = _lasting(lambda: _named_semaphores() - semaphores_before)
    assert not semaphores, f"named semaphores left in /dev/shm: {sorted(semaphores)}"
    spilled = _spill_files() - spilled_before
    assert not spilled, f"spill files left behind: {sorted(spilled)}"
    # An event loop's eventfd (mpevent.shm._loop) lives as long as the loop
    # or gevent hub: a main thread's hub outlives every test module.
    loops = _loop.descriptors()
    fds_after = process.num_fds() - len(_arena.attached()) - loops
    assert fds_after <= fds_before, f"file descriptors grew from {fds_before} to {fds_after}"
    # A failed unlock or an unrecoverable lock is counted in C, never ignored.
    assert _native.lock_faults() == 0, f"{_native.lock_faults()} lock calls failed in C"


@pytest.fixture(autouse=True)
def _redis_backends_forgotten(request: pytest.FixtureRequest) -> Iterator[None]:
    """The Redis tests' one teardown: no backend outlives its test (tests/redis only)."""
    yield
    if request.node.path.parent.name == "redis":
        import redis_servers

        redis_servers.forget_backends()


def _spill_files() -> set[str]:
    """Files in the default spill directory (tests that spill elsewhere use tmp_path)."""
    directory = _spill.configured_dir()
    try:
        return set(os.listdir(directory)) if directory else set()
    except FileNotFoundError:
        return set()


def in_mount_namespace(
    mounts: str, script: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run Python *script* in a private mount namespace (``unshare -m``; root).

    *mounts* are shell commands run there first (``mount -t tmpfs ...``);
    *env* is set for the script.  The mounts vanish with the namespace.
    """
    assign = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    command = (
        f"{mounts} && {assign} "
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(textwrap.dedent(script))}"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=timeout
    )


class ProcessRunner:
    """Starts processes and guarantees they are joined or killed."""

    def __init__(self) -> None:
        self.processes: list[Any] = []

    def start(self, target: Callable[..., Any], *args: Any, method: str = "fork") -> Any:
        process = mp.get_context(method).Process(target=target, args=args, daemon=True)
        process.start()
        self.processes.append(process)
        return process

    def join(self, process: Any, timeout: float = 30) -> int:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)
            pytest.fail(f"process {process.pid} did not finish within {timeout} s")
        code: int = process.exitcode
        return code

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(5)
            if hasattr(process, "close"):
                process.close()


@pytest.fixture
def processes() -> Iterator[ProcessRunner]:
    runner = ProcessRunner()
    try:
        yield runner
    finally:
        runner.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    # The forkserver and the resource tracker are started once per session
    # and keep a descriptor each: start them up front so the per-module fd
    # check sees only what tests leave behind.
    from multiprocessing import forkserver, resource_tracker

    forkserver.ensure_running()
    resource_tracker.ensure_running()
    # So is the socket a set() sends event loops' wakeups through (kept for life).
    _native.wakeup_sender()


def pytest_report_header() -> str:
    return f"mpevent arenas are in {_segment.SHM_DIR}; pid {os.getpid()}"


@pytest.fixture(scope="module")
def backend_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """URL per backend of the contract: shared memory, a Redis server and a
    cluster, which live for the module (without redis-server: shm only)."""
    import redis_servers

    urls = {"shm": "local://"}
    try:
        with redis_servers.single_server(tmp_path_factory.mktemp("redis")) as port:
            urls["redis"] = f"redis://127.0.0.1:{port}/0"
            with redis_servers.cluster(tmp_path_factory.mktemp("cluster")) as ports:
                urls["cluster"] = f"redis://127.0.0.1:{ports[1]}/0"  # any node will do
                yield urls
    finally:
        from mpevent.redis import _registry

        _registry.close_all()


@pytest.fixture(params=["shm", "redis", "cluster"])
def backend(request: pytest.FixtureRequest, backend_urls: dict[str, str]) -> Iterator[Any]:
    """One backend of the contract, connected for the test."""
    if request.param not in backend_urls:
        pytest.skip("no Redis server")
    with mpevent.connect(backend_urls[request.param], authkey=CONTRACT_AUTHKEY) as connected:
        yield connected
