"""Arenas: the shared-memory segments that hold every record, and their lifecycle.

One arena holds up to millions of records (an Event or an AsyncResult
each), the waiter slots of the threads that park on them and the links
that queue those slots; its layout is in ``_native.c``.  A process maps an
arena once, so a million objects cost one mapping and no descriptor.

Who creates, who unlinks
------------------------
* A process that needs a record and has no arena with room creates one,
  named ``mpevent-<pid>-<random>``, mode 0600.
* Every process that maps an arena (creator, forked child, or a process
  that unpickled a handle) writes ``(pid, start time)`` into the arena's
  attach table, and removes it when it exits normally (``atexit``, and
  ``multiprocessing``'s exit finalizers for its workers, which leave with
  ``os._exit``).
* Whoever removes the last live entry unlinks the segment.  Entries of
  processes that died without leaving (SIGKILL) are recognised with psutil
  (pid *and* start time, so a reused pid does not count) and ignored.
* :func:`clean` (``python -m mpevent clean``, and every new arena) unlinks
  arenas whose attached processes are all dead.
* Records are reference counted across processes (``_record``); each
  entry also has a bitmap of the records its process holds, so when a
  process is found dead (by whoever joins or leaves next), its references
  are given back.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing.util
import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Final

import psutil

from .. import _checks
from . import _native, _segment

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

# One attach-table entry: pid, bytes of its held bitmap reserved (written
# by C only), process start time (psutil's create_time).
_ATTACH_ENTRY: Final = struct.Struct("=I4xd")
_ATTACH_PID: Final = struct.Struct("=I")
_ATTACH_START: Final = struct.Struct("=d")
_ATTACH_START_AT: Final = 8
# An entry whose dead owner is being reclaimed holds the *reclaimer's* pid
# with this bit set (pids stay below 2**22) and the reclaimer's start time.
_RECLAIMING: Final = 0x80000000

assert _ATTACH_ENTRY.size == _native.ATTACH_ENTRY_SIZE


_this_process: tuple[int, float] | None = None
_numbers = itertools.count()


def this_process() -> tuple[int, float]:
    """This process as (pid, start time): a reused pid is a different process."""
    global _this_process
    pid = os.getpid()
    if _this_process is None or _this_process[0] != pid:  # computed again after fork
        _this_process = (pid, psutil.Process(pid).create_time())
    return _this_process


def is_alive(pid: int, start_time: float | None = None) -> bool:
    """Whether the process lives (zombies do not).

    With *start_time*, a process that reuses the pid is not it.  Without it
    (waiter slots record only a pid), a reused pid counts as alive: the safe
    side, nothing is reclaimed from a live process.
    """
    try:
        process = psutil.Process(pid)
        if start_time is not None and process.create_time() != start_time:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _segment_size() -> int:
    return _native.segment_size(
        RECORDS_PER_ARENA, SLOTS_PER_ARENA, LINKS_PER_ARENA, SMALL_HEAP_BYTES, LARGE_HEAP_BYTES
    )


class Arena:
    """One mapped arena segment: its records, slots, links and attach table.

    ``native`` offers the record operations (see ``_native.c``); this class
    adds the name, the attach table and unlinking.
    """

    def __init__(self, name: str, native: _native.Arena) -> None:
        self.name = name
        self.number = next(_numbers)  # small and unique in this process (_record's keys)
        self.native = native
        self.view = memoryview(native)
        self.detached = False
        self.entry = -1  # this process's attach-table entry, once joined

    def __repr__(self) -> str:
        return f"<mpevent arena {self.name}>"

    @classmethod
    def create(cls) -> Arena:
        """Create, format and attach a new arena (mode 0600)."""
        name = f"{_segment.PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        size = _segment_size()
        fd = _segment.create(name, size)
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
        except BaseException:
            _segment.unlink(name)
            raise
        finally:
            os.close(fd)
        arena = cls(name, native)
        arena.join()
        return arena

    @classmethod
    def open(cls, name: str) -> Arena:
        """Map an existing arena and join its attach table.

        Raises FileNotFoundError if it is gone (every process that used it
        has exited), ValueError if the segment is not an mpevent arena.
        """
        try:
            fd, size = _segment.open_existing(name)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"mpevent arena {name!r} no longer exists: every process that used it "
                "has exited (or it was cleaned)"
            ) from None
        try:
            native = _native.Arena(fd, size)
        finally:
            os.close(fd)
        native.validate()
        arena = cls(name, native)
        arena.join()
        return arena

    @classmethod
    def open_for_inspection(cls, name: str) -> Arena:
        """Map an arena to look at it, without joining its attach table."""
        fd, size = _segment.open_existing(name)
        try:
            native = _native.Arena(fd, size)
        finally:
            os.close(fd)
        native.validate()
        return cls(name, native)

    # --- waiter slots -----------------------------------------------------

    def allocate_slot(self) -> int:
        """A waiter slot for a thread of this process.

        When every slot is taken, the slots of processes that died without
        returning theirs (killed, or left by os._exit) are reclaimed first.
        """
        try:
            return self.native.slot_alloc(os.getpid())
        except RuntimeError:
            if not self.reclaim_dead_slots():
                raise
            return self.native.slot_alloc(os.getpid())

    def reclaim_dead_slots(self) -> int:
        """Free the slots (and links) of dead processes; how many were freed."""
        alive: dict[int, bool] = {}
        freed = 0
        for slot, pid in self.native.slot_owners():
            if pid not in alive:
                alive[pid] = is_alive(pid)
            if not alive[pid]:
                self.native.slot_reclaim(slot)
                freed += 1
        return freed

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the arena lock around Python code (the attach table).

        Python code may allocate, so the garbage collector may run in here
        and finalize handles, whose releases take record locks and then
        this very lock: done now they would deadlock this thread.  They are
        deferred (run_or_defer) until the lock is released.
        """
        self.native.lock()
        _section.depth = getattr(_section, "depth", 0) + 1
        try:
            yield
        finally:
            _section.depth -= 1
            self.native.unlock()
        if _section.depth == 0:
            _run_deferred()

    # --- attach table ---------------------------------------------------

    def _entries(self) -> Iterator[tuple[int, int, float]]:
        """(entry, pid, start time) of every used entry of the attach table."""
        for entry in range(_native.ATTACH_ENTRIES):
            pid, start = _ATTACH_ENTRY.unpack_from(self.view, _entry_offset(entry))
            if pid:
                yield entry, pid, start

    def _write_entry(self, entry: int, pid: int, start: float) -> None:
        # pid and start time only: the word between them belongs to C.
        offset = _entry_offset(entry)
        _ATTACH_START.pack_into(self.view, offset + _ATTACH_START_AT, start)
        _ATTACH_PID.pack_into(self.view, offset, pid)

    def attached_processes(self) -> list[tuple[int, float]]:
        """(pid, start time) of the processes that attached and did not leave."""
        return [(pid, start) for _, pid, start in self._entries() if not pid & _RECLAIMING]

    def join(self) -> None:
        """Write this process into the attach table (after reclaiming dead entries)."""
        self.reclaim_dead_processes()
        me = this_process()
        with self.locked():
            free = None
            for entry in range(_native.ATTACH_ENTRIES):
                pid, start = _ATTACH_ENTRY.unpack_from(self.view, _entry_offset(entry))
                if (pid, start) == me:
                    self.entry = entry
                    self.native.adopt_entry(entry)
                    return
                if pid == 0 and free is None:
                    free = entry
            if free is None:
                raise RuntimeError(
                    f"arena {self.name} already has {_native.ATTACH_ENTRIES} live processes"
                )
            self.native.held_wipe(free)
            self._write_entry(free, *me)
            self.entry = free
            self.native.adopt_entry(free)

    def reclaim_dead_processes(self) -> int:
        """Give back the references of processes that died attached; how many died.

        Each dead entry is marked with this process as its reclaimer under
        the arena lock, so exactly one process reclaims it; the records it
        held are released outside the lock (releasing takes record locks,
        which come before the arena lock).  A reclaimer that dies midway
        leaves its mark: whoever finds the mark of a dead reclaimer frees the
        entry without releasing anything more, so the remaining references
        leak and none is released twice.
        """
        me_pid, me_start = this_process()
        abandoned = []
        with self.locked():
            dead = []
            for entry, pid, start in self._entries():
                if pid & _RECLAIMING:
                    if not is_alive(pid & ~_RECLAIMING, start):
                        abandoned.append(entry)
                elif not is_alive(pid, start):
                    dead.append(entry)
            for entry in dead:
                self._write_entry(entry, _RECLAIMING | me_pid, me_start)
            for entry in abandoned:  # join() wipes its bitmap when it reuses it
                self._write_entry(entry, 0, 0.0)
        for entry in dead:
            for index in self.native.held_indices(entry):
                self.native.record_release(index)
            self.native.heap_forget(entry)  # its views and its unpublished values
            self.native.held_wipe(entry)
            with self.locked():
                self._write_entry(entry, 0, 0.0)
        return len(dead)

    def leave(self) -> bool:
        """Remove this process from the table; unlink if no live process is left.

        The mapping stays: handles still alive in this process keep working
        until it exits.  Returns True if this call unlinked the segment.
        """
        if self.detached:
            return False
        self.detached = True
        me = this_process()
        if self.entry >= 0:
            self.native.heap_forget(self.entry)  # before the entry can be reused
        with self.locked():
            alive = 0
            for entry, pid, start in list(self._entries()):
                if (pid, start) == me:
                    self._write_entry(entry, 0, 0.0)
                elif is_alive(pid & ~_RECLAIMING, start):  # a live owner or reclaimer
                    alive += 1
            if alive == 0:
                return _segment.unlink(self.name)
        self.reclaim_dead_processes()
        return False


def _entry_offset(entry: int) -> int:
    return _native.ATTACH_OFFSET + entry * _ATTACH_ENTRY.size


# --- work that must wait for the arena lock to be released -----------------

_section = threading.local()  # depth: arena-locked sections this thread is in; deferred


def run_or_defer(action: Callable[[], object]) -> None:
    """Run *action* now, or, inside this thread's arena-locked section, after it.

    For finalizers (a handle or a thread's waiter slots being released):
    they may run at any allocation, including one made while this thread
    holds an arena lock.
    """
    if getattr(_section, "depth", 0):
        _section.__dict__.setdefault("deferred", []).append(action)
    else:
        action()


def _run_deferred() -> None:
    deferred = _section.__dict__.pop("deferred", [])
    for action in deferred:
        action()


# --- the process's arenas ----------------------------------------------

_arenas: dict[str, Arena] = {}
_arenas_lock = threading.Lock()
_exit_hooks_pid = 0


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
            _install_exit_hooks()
        return arena


def allocate(kind: int) -> tuple[Arena, int, int]:
    """A new record of *kind* with one reference: (arena, index, serial)."""
    for arena in list(_arenas.values()):
        if not arena.detached:
            got = arena.native.record_alloc(kind)
            if got is not None:
                return arena, got[0], got[1]
    with _arenas_lock:
        clean()
        arena = Arena.create()
        _arenas[arena.name] = arena
        _install_exit_hooks()
    got = arena.native.record_alloc(kind)
    if got is None:
        raise MemoryError("a new mpevent arena has no room for a record")  # pragma: no cover
    return arena, got[0], got[1]


# Run at exit before leaving: _record drops this process's references here,
# since multiprocessing children leave through os._exit() without collecting.
BEFORE_LEAVING: list[Callable[[], None]] = []


def leave_all() -> None:
    """Drop this process's references and leave every arena it joined (at exit)."""
    if _exit_hooks_pid != os.getpid():
        return
    try:
        for hook in BEFORE_LEAVING:
            hook()
    finally:  # leave in any case: a joined entry must not outlive the process
        for arena in list(_arenas.values()):
            arena.leave()


def _install_exit_hooks() -> None:
    global _exit_hooks_pid
    if _exit_hooks_pid == os.getpid():
        return
    _exit_hooks_pid = os.getpid()
    atexit.register(leave_all)
    # multiprocessing children end with os._exit(), which skips atexit but
    # runs these finalizers.
    multiprocessing.util.Finalize(None, leave_all, exitpriority=-100)


class _AfterMultiprocessingFork:
    """multiprocessing clears its finalizers in a new child; put ours back."""

    def __call__(self) -> None:
        global _exit_hooks_pid
        if _arenas:
            _exit_hooks_pid = 0
            _install_exit_hooks()


_after_mp_fork = _AfterMultiprocessingFork()
multiprocessing.util.register_after_fork(_after_mp_fork, lambda hook: hook())


def _after_fork_in_child() -> None:
    global _arenas_lock, _exit_hooks_pid
    _arenas_lock = threading.Lock()
    _exit_hooks_pid = 0
    for arena in _arenas.values():
        if not arena.detached:
            arena.join()
            arena.native.after_fork_child(arena.entry)  # pin the views it inherited
    if _arenas:
        _install_exit_hooks()


# Zero-copy views of values are held across the fork (see heap.c).
os.register_at_fork(before=_native.before_fork, after_in_child=_after_fork_in_child)


def clean(dry_run: bool = False) -> list[str]:
    """Unlink arenas whose attached processes are all dead; return their names.

    Never unlinks an arena a live process is attached to, nor one being
    created right now; in live arenas, gives back the references of the
    processes that died attached.
    """
    removed = []
    for name in _segment.list_names():
        if name.startswith(_segment.NAME_PREFIX):
            continue  # object names are cleaned by _names
        if name in _arenas:
            continue
        try:
            fd, size = _segment.open_existing(name)
        except (FileNotFoundError, PermissionError):
            continue
        try:
            native = _native.Arena(fd, size)
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
        arena = Arena(name, native)
        if _is_abandoned(arena):
            if dry_run or _segment.unlink(name):
                removed.append(name)
        elif not dry_run and _is_valid(arena):
            arena.reclaim_dead_processes()  # live arena: give back what the dead held
    return removed


def _is_valid(arena: Arena) -> bool:
    try:
        arena.native.validate()
    except ValueError:
        return False  # half-created by a live process, or of another layout
    return True


def _is_abandoned(arena: Arena) -> bool:
    if not _is_valid(arena):
        return False  # its locks are not where this layout expects them
    owners = arena.attached_processes()
    if owners:
        return not any(is_alive(pid, start) for pid, start in owners)
    return not _creator_alive(arena.name)


def _creator_alive(name: str) -> bool:
    """An empty table may belong to an arena its creator is still formatting."""
    try:
        pid = int(name[len(_segment.PREFIX) :].split("-")[0])
    except ValueError:
        return False
    return psutil.pid_exists(pid)
