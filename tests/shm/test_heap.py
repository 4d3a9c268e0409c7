"""The value heap: zero-copy arrays, their lifetime, bounded memory, the cap."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from multiprocessing.connection import Connection

import numpy as np
import pytest
from conftest import ProcessRunner, in_mount_namespace

import mpevent
from mpevent.shm import _arena, _native, _segment

MiB = 1 << 20


def _arena_of(result: mpevent.AsyncResult) -> _arena.Arena:
    return result._record.arena  # type: ignore[attr-defined, no-any-return]


def _large_used(result: mpevent.AsyncResult) -> int:
    return _arena_of(result).native.heap_statistics()["large_used"]


def _resident_bytes(arena: _arena.Arena) -> int:
    """Real memory the arena's file holds in /dev/shm (what `du` counts)."""
    return os.stat(_segment.path_of(arena.name)).st_blocks * 512


# --- zero-copy reads ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 64 << 10, 4 * MiB])
def test_numpy_arrays_round_trip_with_dtype_and_shape(size: int) -> None:
    result = mpevent.AsyncResult()
    array = np.arange(size // 8, dtype=np.float64).reshape(-1, 1)
    result.set(array)
    got = pickle.loads(pickle.dumps(result)).get()
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got, array)


def test_large_arrays_arrive_read_only_and_without_a_copy() -> None:
    result = mpevent.AsyncResult()
    result.set(np.ones(MiB, dtype=np.uint8))
    first = pickle.loads(pickle.dumps(result)).get()
    second = pickle.loads(pickle.dumps(result)).get()
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 7
    # Two handles read the same shared pages, not two private copies.
    assert np.shares_memory(first, second)


def test_get_copy_gives_a_private_writable_array() -> None:
    result = mpevent.AsyncResult()
    result.set(np.zeros(MiB, dtype=np.uint8))
    shared = result.get()
    private = result.get(copy=True)
    private[0] = 9
    assert private.flags.writeable
    assert not np.shares_memory(shared, private)
    assert shared[0] == 0 and result.get()[0] == 0


def test_bytes_are_copied_out_and_release_their_block() -> None:
    result = mpevent.AsyncResult()
    result.set(b"b" * (2 * MiB))
    before = _large_used(result)
    value = pickle.loads(pickle.dumps(result)).get()
    assert isinstance(value, bytes) and len(value) == 2 * MiB
    gc.collect()
    assert _large_used(result) == before  # no view left pinning anything


@pytest.mark.skipif(_native.HUGE_PAGE == 0, reason="this kernel has no transparent huge pages")
def test_large_bytes_copies_take_huge_pages_until_two_in_a_row_are_slow() -> None:
    # On a VM that hands free memory back to its host, a fresh huge page
    # costs the host's faults on every 4 KiB of it (docs/design.md): after
    # two slow ones a process copies into small pages.
    result = mpevent.AsyncResult()
    result.set(b"h" * (16 * MiB))

    def huge_copies_after(ns_per_mib: int, copies: int) -> int:
        """Copies advised huge among *copies* more, under this threshold."""
        _, before = _native.testing_copy_huge_threshold(ns_per_mib)
        for _ in range(copies):
            assert pickle.loads(pickle.dumps(result)).get()[-1:] == b"h"
        return _native.testing_copy_huge_threshold(ns_per_mib)[1] - before

    was, _ = _native.testing_copy_huge_threshold(10**12)
    try:
        assert huge_copies_after(10**12, 5) == 5  # never slow: huge throughout
        assert huge_copies_after(0, 5) == 2  # every one slow: two, then small pages
    finally:
        _native.testing_copy_huge_threshold(was)


def test_a_view_outlives_set_again_and_every_handle() -> None:
    result = mpevent.AsyncResult()
    result.set(np.full(MiB, 3, dtype=np.uint8))
    array = pickle.loads(pickle.dumps(result)).get()
    arena = _arena_of(result)
    used_with_view = arena.native.heap_statistics()["large_used"]
    result.set(np.full(MiB, 4, dtype=np.uint8))  # replaces the value
    del result
    gc.collect()  # every handle gone: the record is freed
    assert array.sum() == 3 * MiB  # the old block is still there, unchanged
    del array
    gc.collect()
    assert arena.native.heap_statistics()["large_used"] < used_with_view


def _set_array_and_die(result: mpevent.AsyncResult, value: int) -> None:
    result.set(np.full(MiB, value, dtype=np.uint8))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_view_outlives_its_setters_death(processes: ProcessRunner, method: str) -> None:
    result = mpevent.AsyncResult()
    child = processes.start(_set_array_and_die, result, 5, method=method)
    array = result.get(timeout=30)
    assert processes.join(child) == -signal.SIGKILL
    _arena_of(result).reclaim_dead_processes()
    assert array.sum() == 5 * MiB


def _read_and_hold_then_die(result: mpevent.AsyncResult, ready: mpevent.Event) -> None:
    held = result.get(timeout=30)
    assert held.sum() == MiB
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_readers_views_are_given_back(processes: ProcessRunner) -> None:
    result = mpevent.AsyncResult()
    result.set(np.ones(MiB, dtype=np.uint8))
    arena = _arena_of(result)
    ready = mpevent.Event()
    child = processes.start(_read_and_hold_then_die, result, ready, method="spawn")
    assert ready.wait(30)
    assert processes.join(child) == -signal.SIGKILL
    used = arena.native.heap_statistics()["large_used"]
    del result
    gc.collect()
    # The dead reader still pins the block until someone finds it dead.
    assert arena.native.heap_statistics()["large_used"] == used
    arena.reclaim_dead_processes()
    assert arena.native.heap_statistics()["large_used"] < used


def _check_inherited_view(array: np.ndarray, go: mpevent.Event, sums: Connection) -> None:
    assert go.wait(30)  # the parent has dropped its array and its result by now
    gc.collect()
    sums.send(int(array.sum()))


def test_a_forked_child_keeps_the_views_it_inherited(processes: ProcessRunner) -> None:
    result = mpevent.AsyncResult()
    result.set(np.full(MiB, 2, dtype=np.uint8))
    array = result.get()
    go = mpevent.Event()
    receiver, sender = mp.get_context("fork").Pipe(duplex=False)
    child = processes.start(_check_inherited_view, array, go, sender, method="fork")
    del array, result
    gc.collect()
    for _ in range(3):  # reuse freed blocks: the child's must not be among them
        mpevent.AsyncResult().set(np.zeros(MiB, dtype=np.uint8))
    go.set()
    try:
        assert receiver.poll(30)
        assert receiver.recv() == 2 * MiB
    finally:
        receiver.close()
        sender.close()
    assert processes.join(child) == 0


# --- writers that die, memory that stays bounded -------------------------------


def _allocate_and_die(result: mpevent.AsyncResult) -> None:
    arena = _arena_of(result)
    arena.native.block_alloc(8 * MiB, arena.entry)  # as if killed while copying in
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_writer_killed_mid_copy_publishes_nothing_and_its_block_comes_back(
    processes: ProcessRunner,
) -> None:
    result = mpevent.AsyncResult()
    arena = _arena_of(result)
    gc.collect()  # views that earlier tests left to the collector
    before = arena.native.heap_statistics()["large_used"]
    child = processes.start(_allocate_and_die, result, method="fork")
    assert processes.join(child) == -signal.SIGKILL
    assert not result.ready()
    assert arena.native.heap_statistics()["large_used"] > before
    arena.reclaim_dead_processes()
    assert arena.native.heap_statistics()["large_used"] == before
    assert not result.ready()


def _read_results(handles: Connection, size: int) -> None:
    while True:
        data = handles.recv_bytes()
        if not data:
            return
        value = pickle.loads(data).get(timeout=30)
        handles.send_bytes(b"ok" if len(value) == size else b"bad")
        del value


def _stream_results(processes: ProcessRunner, count: int) -> None:
    warm = mpevent.AsyncResult()
    warm.set(b"w" * MiB)
    arena = _arena_of(warm)
    del warm
    gc.collect()
    start = _resident_bytes(arena)
    parent, child_end = mp.get_context("fork").Pipe()
    child = processes.start(_read_results, child_end, MiB, method="fork")
    peak = start
    for n in range(count):
        result = mpevent.AsyncResult()
        result.set(bytes([n % 256]) * MiB)
        parent.send_bytes(pickle.dumps(result))
        del result
        assert parent.poll(30)
        assert parent.recv_bytes() == b"ok"
        if n % 100 == 0:
            peak = max(peak, _resident_bytes(arena))
    parent.send_bytes(b"")
    parent.close()
    child_end.close()
    assert processes.join(child) == 0
    assert peak - start <= 64 * MiB


def test_ten_thousand_megabyte_results_keep_shared_memory_bounded(
    processes: ProcessRunner,
) -> None:
    _stream_results(processes, 10_000)


@pytest.mark.stress
def test_a_hundred_thousand_megabyte_results_keep_shared_memory_bounded(
    processes: ProcessRunner,
) -> None:
    _stream_results(processes, 100_000)


@pytest.mark.needs_populate  # MADV_REMOVE must give pages back (qemu-user only says it did)
def test_a_dropped_burst_gives_its_memory_back_to_the_os() -> None:
    watermark = _arena.HEAP_WATERMARK
    gc.collect()
    arena = _arena_of(mpevent.AsyncResult())
    start = _resident_bytes(arena)
    burst = []
    for n in range(32):  # 1 GiB
        result = mpevent.AsyncResult()
        result.set(bytes([n]) * (32 * MiB))
        burst.append(result)
    assert _resident_bytes(arena) >= start + 1024 * MiB
    del burst, result
    gc.collect()
    # Freed synchronously: what free blocks keep stays under the watermark.
    stats = arena.native.heap_statistics()
    assert stats["large_free_resident"] <= watermark
    assert stats["large_given_back"] >= 1024 * MiB - watermark
    assert _resident_bytes(arena) <= start + watermark


def test_after_a_burst_a_value_set_and_dropped_in_turn_reuses_a_warm_block() -> None:
    # A burst of kept values past the watermark leaves some free blocks
    # warm and the rest punched out.  A value set and dropped in turn must
    # take a warm one and keep it warm: taking a punched block every time
    # faults all of its pages in again and punches them out again on the
    # drop (given back once per value).
    done = _run_script(
        """
        import gc
        import mpevent
        burst = []
        for n in range(16):
            result = mpevent.AsyncResult()
            result.set(bytes([n]) * (1 << 20))
            burst.append(result)
        native = burst[0]._record.arena.native
        del burst, result
        gc.collect()
        before = native.heap_statistics()
        assert before["large_given_back"] > 0, before  # the burst went past the watermark
        for n in range(10):
            result = mpevent.AsyncResult()
            result.set(bytes([n]) * (1 << 20))
            assert result.get()[-1] == n
            del result
            gc.collect()
        after = native.heap_statistics()
        print("given back", before["large_given_back"], after["large_given_back"])
        assert after["large_given_back"] == before["large_given_back"], (before, after)
        print("warm")
        """,
        MPEVENT_HEAP_WATERMARK="8M",
    )
    assert done.returncode == 0 and "warm" in done.stdout, done.stdout + done.stderr


# --- the cap -----------------------------------------------------------------


def _run_script(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cap_is_a_memory_error_that_changes_nothing() -> None:
    done = _run_script(
        """
        import mpevent
        small = mpevent.AsyncResult()
        small.set(b"fits")
        big = mpevent.AsyncResult()
        try:
            big.set(b"x" * (32 << 20))
        except MemoryError as exc:
            print("refused:", exc)
        assert not big.ready()
        big.set(b"y" * (1 << 20))  # what fits still works
        assert big.get() == b"y" * (1 << 20) and small.get() == b"fits"
        events = [mpevent.Event()]
        assert not events[0].wait(0.001)  # this thread's waiter slot, before the cap
        try:
            while True:
                events.append(mpevent.Event())
        except MemoryError as exc:
            print("events refused:", exc)
        events[0].set()
        assert events[0].wait(1) and len(events) > 1000
        print("alive")
        """,
        MPEVENT_MAX_SHM="4M",
        MPEVENT_SPILL_DIR="off",  # the MemoryError itself (tests/shm/test_spill.py spills)
    )
    assert done.returncode == 0, done.stderr
    assert "refused: mpevent's shared-memory cap is reached" in done.stdout
    assert "MPEVENT_MAX_SHM=4194304" in done.stdout
    assert "events refused: mpevent's shared-memory cap" in done.stdout
    assert done.stdout.rstrip().endswith("alive")


def test_a_malformed_cap_names_the_variable() -> None:
    done = _run_script("import mpevent; mpevent.Event()", MPEVENT_MAX_SHM="lots")
    assert done.returncode != 0
    assert "MPEVENT_MAX_SHM='lots' is not a size" in done.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("512", 512), ("64K", 64 << 10), ("1.5G", 3 << 29), ("2MiB", 2 << 20)],
)
def test_sizes_take_binary_suffixes(text: str, size: int) -> None:
    from mpevent import _checks

    assert _checks.parse_size(text, "X") == size


# --- the reserve -------------------------------------------------------------


def test_kept_values_keep_their_reserve_when_other_classes_fill_the_watermark() -> None:
    # Free blocks of one size fill the watermark; kept values of another
    # size then carve blocks, and each must leave a refilled reserve behind
    # (bounded on its own), not one punched out at once by the watermark,
    # or every later kept value faults its pages in before its wakeup.
    done = _run_script(
        """
        import gc
        import mpevent
        MiB = 1 << 20
        burst = []
        for n in range(12):
            result = mpevent.AsyncResult()
            result.set(bytes([n]) * MiB)
            burst.append(result)
        native = burst[0]._record.arena.native
        del burst, result
        gc.collect()  # 1 MiB blocks now fill the 8 MiB watermark
        kept = []
        for n in range(6):
            result = mpevent.AsyncResult()
            result.set(bytes([n]) * (3 * MiB))
            kept.append(result)
            stats = native.heap_statistics()
            assert stats["reserve_bytes"] >= 3 * MiB, (n, stats)
        assert [result.get()[-1] for result in kept] == list(range(6))
        print("refilled")
        """,
        MPEVENT_HEAP_WATERMARK="8M",
    )
    assert done.returncode == 0 and "refilled" in done.stdout, done.stdout + done.stderr


def test_a_kept_small_value_leaves_the_next_ones_pages_reserved() -> None:
    # The small blocks' reserve: after a value carved from the region's end
    # is published, at least one chunk (64 KiB) past the end is reserved,
    # so the next kept value does not fault its pages in before its wakeup.
    # In a fresh process: no free small blocks of earlier tests to reuse.
    done = _run_script(
        """
        import mpevent
        kept = []
        for n in range(12):
            result = mpevent.AsyncResult()
            result.set(bytes([n]) * (16 << 10))  # a 32 KiB block each
            kept.append(result)
            stats = result._record.arena.native.heap_statistics()
            ahead = stats["small_reserved"] - stats["small_carved"]
            assert ahead >= 64 << 10, (n, stats)
        assert [result.get()[0] for result in kept] == list(range(12))
        print("ahead")
        """
    )
    assert done.returncode == 0 and "ahead" in done.stdout, done.stdout + done.stderr


RESERVE_PROGRAM = """
import mpevent
from mpevent.shm import _arena
MiB = 1 << 20

def heap():
    return _arena.attached()[0].native.heap_statistics()

first = mpevent.AsyncResult()
first.set(b"w" * MiB)
start = heap()
kept = []
for n in range(200):  # kept results of one size: each finds its block faulted in ahead
    result = mpevent.AsyncResult()
    result.set(bytes([n % 251]) * MiB)
    kept.append(result)
    stats = heap()
    assert 0 < stats["reserve_bytes"] <= 64 * MiB, stats
    assert stats["shm_reserved"] <= stats["shm_cap"], stats  # never over the cap
grown = heap()["shm_reserved"] - start["shm_reserved"]
per_value = MiB + 2 * 4096  # the value, its frame header and the block's header page
assert grown <= 200 * per_value + heap()["reserve_bytes"], (grown, heap())

# Room a real value needs comes before the reserve: 2 MiB more fits only
# if the reserve (about 1 MiB here) gives its pages back; nothing spills.
arena = _arena.attached()[0]
stats = heap()
room = stats["shm_cap"] - stats["shm_reserved"]
big = mpevent.AsyncResult()
big.set(b"b" * (room + stats["reserve_bytes"] - 64 * 1024 - 2 * 4096))
assert arena.native.statistics()["spilled_values"] == 0, arena.native.statistics()
print("ok", grown // MiB, heap()["reserve_bytes"])
"""


def test_the_reserve_is_bounded_within_the_cap_and_gives_way_to_a_real_value() -> None:
    done = _run_script(RESERVE_PROGRAM, MPEVENT_MAX_SHM="260M", MPEVENT_SPILL_DIR="off")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_an_unused_reserve_is_given_back_after_five_seconds() -> None:
    done = _run_script(
        """
        import time, mpevent
        from mpevent.shm import _arena
        kept = [mpevent.AsyncResult() for _ in range(3)]
        for result in kept:
            result.set(b"i" * (4 << 20))
        native = _arena.attached()[0].native
        held = native.heap_statistics()["reserve_bytes"]
        assert held >= 4 << 20, native.heap_statistics()
        time.sleep(5.3)  # idle: no event marks time passing
        mpevent.AsyncResult().set(b"s" * (100 << 10))  # any later heap call gives it back
        after = native.heap_statistics()
        print(held, after["reserve_bytes"])
        """,
    )
    assert done.returncode == 0, done.stderr
    held, after = map(int, done.stdout.split())
    # The 100 KiB value refilled a reserve of its own class; the 4 MiB one went.
    assert after < 1 << 20 < held


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private tmpfs mounted huge=advise (CI has both)",
)
def test_a_dev_shm_mounted_huge_advise_gets_huge_pages_asked_for() -> None:
    script = """
        import mpevent
        from mpevent.shm import _arena, _segment
        result = mpevent.AsyncResult()
        result.set(b"h" * (8 << 20))
        assert _segment.huge_pages() == "advise"
        assert _arena.attached()[0].native.advise_huge()  # the kernel took the advice
        assert result.get() == b"h" * (8 << 20)
        print("ok")
        """
    done = in_mount_namespace(
        "mount -t tmpfs -o size=256m,huge=advise tmpfs /dev/shm", script, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
