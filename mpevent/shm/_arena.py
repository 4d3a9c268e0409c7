"""Arenas: the shared-memory segments that hold every record, mapped once per process.

One arena holds up to millions of records (an Event or an AsyncResult
each), the waiter slots of the threads that park on them and the links
that queue those slots; its layout is in ``src/native/arena.h``.  A process
maps an arena once and keeps one descriptor of it, so a million objects
cost one mapping and one descriptor.  Who is attached, and alive, is the
attach table's (``_attach``); removing abandoned arenas is ``_clean``'s.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from typing import Final

from .. import _checks, _lifecycle
from . import _clean, _native, _segment, _spill
from ._attach import AttachTable

RECORDS_PER_ARENA: Final = int(os.environ.get("MPEVENT_ARENA_RECORDS", 4 * 1024 * 1024))
SLOTS_PER_ARENA: Final = int(os.environ.get("MPEVENT_ARENA_SLOTS", 16384))
LINKS_PER_ARENA: Final = SLOTS_PER_ARENA + 1024 * 1024
# Address space, not memory: only reserved pages of these regions cost RAM.
SMALL_HEAP_BYTES: Final = 512 * 1024 * 1024
LARGE_HEAP_BYTES: Final = _checks.size_from_env("MPEVENT_ARENA_HEAP", 256 << 30)
# Shared memory one arena may use (0: as much as /dev/shm holds).
MAX_SHM: Final = _checks.size_from_env("MPEVENT_MAX_SHM", 0)
# Free value blocks keep at most this many bytes resident; the rest goes back.
HEAP_WATERMARK: Final = _checks.size_from_env("MPEVENT_HEAP_WATERMARK", 256 << 20)

_numbers = itertools.count()


def _segment_size() -> int:
    return _native.segment_size(
        RECORDS_PER_ARENA, SLOTS_PER_ARENA, LINKS_PER_ARENA, SMALL_HEAP_BYTES, LARGE_HEAP_BYTES
    )


class Arena(AttachTable):
    """One mapped arena segment: its records, slots, links and attach table.

    ``native`` offers the record operations (``src/native/``); this class
    adds creating, opening and formatting the segment and the waiter slots
    to the attach table (joining, leaving, forks).
    """

    def __init__(self, name: str, native: _native.Arena, fd: int) -> None:
        super().__init__(name, native, fd)
        self.number = next(_numbers)  # small and unique in this process (_record's keys)
        self.view = memoryview(native)
        if _segment.huge_pages() == "advise":
            # Values in 2 MiB pages: 512 times fewer faults to fill or read
            # one (each process advises its own mapping).
            native.advise_huge()

    def __repr__(self) -> str:
        return f"<mpevent arena {self.name}>"

    @classmethod
    def create(cls) -> Arena:
        """Create, format and attach a new arena (mode 0600)."""
        size = _segment_size()
        while True:
            name = f"{_segment.PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            fd = _segment.create(name, size)
            # Byte 0 is ours before the header is written: a half-formatted
            # arena of a live creator never looks abandoned to a cleaner.
            # A cleaner that came first holds it, and unlinks the file.
            if _native.ofd_lock(fd, 0, 1, False) and _segment.is_at(fd, name):
                break
            os.close(fd)
        try:
            native = _native.Arena(fd, size)
            native.format(
                RECORDS_PER_ARENA,
                SLOTS_PER_ARENA,
                LINKS_PER_ARENA,
                SMALL_HEAP_BYTES,
                LARGE_HEAP_BYTES,
                MAX_SHM,
                HEAP_WATERMARK,
            )
            # Where its values go when shared memory cannot hold them: the
            # creator's choice, as for the cap (the directory is only
            # looked at when a value first spills).
            native.set_spill(_spill.configured_dir(), name)
        except BaseException:
            _segment.unlink(name)
            os.close(fd)
            raise
        arena = cls(name, native, fd)
        with arena.locked():
            arena._take_entry(0)  # the table is empty, and byte 0 is locked
        return arena

    @classmethod
    def open(cls, name: str) -> Arena:
        """Map an existing arena and join its attach table.

        Raises FileNotFoundError if it is gone (every process that used it
        has exited), ValueError if the segment is not an mpevent arena.
        """
        gone = FileNotFoundError(
            f"mpevent arena {name!r} no longer exists: every process that used it "
            "has exited (or it was cleaned)"
        )
        try:
            fd, size = _segment.open_existing(name)
        except FileNotFoundError:
            raise gone from None
        try:
            native = _native.Arena(fd, size)
            native.validate()
            arena = cls(name, native, fd)
            if not arena.join():
                raise gone
        except BaseException:
            os.close(fd)
            raise
        return arena

    @classmethod
    def open_for_inspection(cls, name: str) -> Arena:
        """Map an arena to look at it, without joining its attach table."""
        fd, size = _segment.open_existing(name)
        try:
            native = _native.Arena(fd, size)
            native.validate()
        except BaseException:
            os.close(fd)
            raise
        return cls(name, native, fd)

    def close_inspection(self) -> None:
        """Close the descriptor of an arena opened for inspection."""
        if self.entry < 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- waiter slots -----------------------------------------------------

    def allocate_slot(self) -> int:
        """A waiter slot for a thread of this process.

        When every slot is taken, the slots of processes that died without
        returning theirs (killed, or left by os._exit) are reclaimed first.
        """
        try:
            return self.native.slot_alloc()
        except _native.Full:
            if not self.reclaim_dead_processes() + self.reclaim_dead_slots():
                raise
            return self.native.slot_alloc()

    def reclaim_dead_slots(self) -> int:
        """Free the slots (and links) of dead processes; how many were freed."""
        alive: dict[tuple[int, int], bool] = {}
        freed = 0
        for slot, entry, epoch in self.native.slot_owners():
            owner = (entry, epoch)
            if owner not in alive:
                alive[owner] = self.native.entry_alive(entry, epoch)
            if not alive[owner] and self.native.slot_reclaim(slot, entry, epoch):
                freed += 1
        return freed


# --- the process's arenas ----------------------------------------------

_arenas: dict[str, Arena] = {}
_arenas_lock = threading.Lock()


def attached() -> list[Arena]:
    """The arenas this process has mapped, oldest first."""
    return list(_arenas.values())


def by_name(name: str) -> Arena:
    """The arena called *name*, mapping it on first use."""
    arena = _arenas.get(name)
    if arena is not None:
        return arena
    _segment.check_name(name)
    with _arenas_lock:
        arena = _arenas.get(name)
        if arena is None:
            arena = Arena.open(name)
            _arenas[name] = arena
            _lifecycle.need_exit_hooks()
        return arena


def allocate(kind: int) -> tuple[Arena, int, int]:
    """A new record of *kind* with one reference: (arena, index, serial)."""
    for arena in list(_arenas.values()):
        if not arena.detached:
            try:
                index, serial = arena.native.record_alloc(kind)
            except _native.Full:
                continue  # the next arena, or a new one
            return arena, index, serial
    with _arenas_lock:
        clean()
        arena = Arena.create()
        _arenas[arena.name] = arena
        _lifecycle.need_exit_hooks()
    index, serial = arena.native.record_alloc(kind)
    return arena, index, serial


def leave_all() -> None:
    """Leave every arena this process joined (its exit hook, after the records').

    A process keeps its descriptors to the end: they close with it.  A
    subinterpreter's exit hooks run when it ends while its process lives
    on, so it closes its own (each would otherwise hold a lock owner of its
    arena until the process exits), having made its locks anonymous first.
    """
    closing = not _native.main_interpreter()
    for arena in list(_arenas.values()):
        arena.leave()
        if closing and arena.fd >= 0:
            arena.native.forget_descriptors()
            os.close(arena.fd)
            arena.fd = -1


def _before_fork() -> None:
    for arena in list(_arenas.values()):
        try:
            arena.prepare_child()
        except OSError:  # out of descriptors: the child joins by itself
            arena.child = None
            arena.shared_into_child = False
    _native.before_fork()  # zero-copy views are held across the fork (see heap.c)


def _after_fork_in_parent() -> None:
    for arena in list(_arenas.values()):
        arena.after_fork_in_parent()


def _after_fork_in_child() -> None:
    global _arenas_lock
    _arenas_lock = threading.Lock()
    for arena in _arenas.values():
        arena.after_fork_in_child()


_lifecycle.on_fork(
    "arenas",
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
_lifecycle.at_exit("arenas", leave_all)


def clean(dry_run: bool = False) -> list[str]:
    """Unlink arenas no live process is attached to (not this process's); their names."""
    return _clean.clean(dry_run, mapped=list(_arenas))
