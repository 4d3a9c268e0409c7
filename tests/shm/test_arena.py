"""Arenas: records from a free list, constant fds and mappings, references."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import stat
from typing import Any

import psutil
import pytest
from conftest import ProcessRunner

import mpevent
from mpevent.shm import _arena, _attach, _native, _record, _segment


def test_a_million_events_cost_constant_fds_and_mappings() -> None:
    process = psutil.Process()
    mpevent.Event()  # make sure this process already has its arena
    fds, maps = process.num_fds(), _shared_memory_mappings(process)
    events = [mpevent.Event() for _ in range(1_000_000)]
    assert process.num_fds() == fds
    assert _shared_memory_mappings(process) == maps
    events[-1].set()
    assert events[-1].is_set() and not events[0].is_set()
    del events


def _shared_memory_mappings(process: psutil.Process) -> int:
    return sum(m.path.startswith("/dev/shm/") for m in process.memory_maps(grouped=False))


def test_freed_records_are_reused() -> None:
    event = mpevent.Event()
    index = event._record.index
    del event
    gc.collect()
    again = mpevent.Event()
    assert again._record.index == index
    assert not again.is_set()


def test_reused_record_starts_clear_and_stale_handle_is_refused() -> None:
    event = mpevent.Event()
    event.set()
    reference = event._record.reference()
    # Drop both the object's and the pin's reference: the record is freed.
    event._record.native.record_retain(reference.record, reference.serial, True)
    event._record.native.record_release(reference.record)
    del event
    gc.collect()
    newcomer = mpevent.Event()
    assert not newcomer.is_set()
    with pytest.raises(LookupError, match="no longer exists"):
        _record.Record.from_reference(reference, reference.kind)


def test_handle_from_another_machine_is_refused() -> None:
    reference = mpevent.Event()._record.reference()
    foreign = reference._replace(boot_id="another-machine")
    with pytest.raises(ValueError, match="another machine"):
        _record.Record.from_reference(foreign, foreign.kind)
    _record.Record.from_reference(reference, reference.kind)  # consume the pin


def test_handle_of_another_user_is_refused() -> None:
    reference = mpevent.Event()._record.reference()
    foreign = reference._replace(uid=os.geteuid() + 1)
    with pytest.raises(PermissionError, match="belongs to uid"):
        _record.Record.from_reference(foreign, foreign.kind)
    _record.Record.from_reference(reference, reference.kind)


def test_handle_whose_arena_is_gone_raises_file_not_found() -> None:
    reference = mpevent.Event()._record.reference()
    gone = reference._replace(arena="mpevent-1-deadbeef")
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        _record.Record.from_reference(gone, gone.kind)
    _record.Record.from_reference(reference, reference.kind)


def test_segments_are_private_to_the_user() -> None:
    mpevent.Event()
    for arena in _arena.attached():
        mode = os.stat(_segment.path_of(arena.name)).st_mode
        assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize("name", ["", "a/b", "x" * 300, 42])
def test_malformed_segment_names_are_refused(name: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        _segment.check_name(name)


def test_attach_table_lists_this_process_alive() -> None:
    mpevent.Event()
    for arena in _arena.attached():
        mine = [p for p in arena.attached_processes() if p.entry == arena.entry]
        assert mine == [_attach.Attached(arena.entry, os.getpid(), True, False)]


def _make_arena_then_die(told: Any) -> None:
    # A fresh arena of this process only, then SIGKILL: nothing runs at exit.
    _arena._arenas.clear()
    event = mpevent.Event()
    told.send(event._record.arena.name)
    os.kill(os.getpid(), signal.SIGKILL)


def test_clean_removes_arenas_of_dead_processes_only(processes: ProcessRunner) -> None:
    told, tell = mp.get_context("fork").Pipe(duplex=False)
    child = processes.start(_make_arena_then_die, tell)
    assert told.poll(60)
    orphan = told.recv()
    processes.join(child)
    assert child.exitcode == -signal.SIGKILL
    assert orphan.startswith(f"{_segment.PREFIX}{child.pid}-")
    # Every new arena cleans first, so another process of this run may
    # have removed the orphan already; if it is still there, ours does.
    there = orphan in _segment.list_names()
    removed = _arena.clean()
    assert orphan not in _segment.list_names()
    assert orphan in removed or not there
    for arena in _arena.attached():  # ours are alive and untouched
        assert os.path.exists(_segment.path_of(arena.name))


def _hold_arena_lock_and_die(name: str) -> None:
    _arena.by_name(name).native.lock()
    os.kill(os.getpid(), signal.SIGKILL)


def test_lock_of_a_killed_holder_is_recovered(processes: ProcessRunner) -> None:
    event = mpevent.Event()
    arena = event._record.arena
    recoveries = arena.native.statistics()["recoveries"]
    child = processes.start(_hold_arena_lock_and_die, arena.name, method="spawn")
    processes.join(child)
    assert child.exitcode == -signal.SIGKILL
    other = mpevent.Event()  # allocation takes the arena lock
    other.set()
    assert other.is_set()
    assert arena.native.statistics()["recoveries"] == recoveries + 1


def test_handles_finalized_while_the_arena_lock_is_held_do_not_deadlock() -> None:
    """The garbage collector may run inside the attach-table code."""
    arena = mpevent.Event()._record.arena

    class Cycle:
        def __init__(self) -> None:
            self.me = self
            self.event = mpevent.Event()

    gc.collect()
    gc.disable()  # only the collection below may free the cycle
    try:
        Cycle()  # garbage only a collection can free
        before = arena.native.statistics()["records_live"]
        with arena.locked():
            gc.collect()  # finalizes the Event: its release must wait
            assert arena.native.statistics()["records_live"] == before
        assert arena.native.statistics()["records_live"] == before - 1
    finally:
        gc.enable()


def test_mark_of_a_reclaimer_that_died_is_cleared_and_does_not_pin_the_arena() -> None:
    arena = mpevent.Event()._record.arena
    used = {p.entry for p in arena.attached_processes()}
    free = next(e for e in range(64) if e not in used)
    with arena.locked():  # what a reclaimer killed midway leaves behind: nobody holds its byte
        arena.native.entry_write(free, _native.ENTRY_RECLAIMING, 12345)
    assert _attach.Attached(free, 12345, False, True) in arena.attached_processes()
    arena.reclaim_dead_processes()  # frees the entry, releasing nothing of its bitmap
    assert free not in {p.entry for p in arena.attached_processes()}
