"""Arenas: the shared-memory segments that hold every record, and who is attached.

One arena holds up to millions of records (an Event or an AsyncResult
each), the waiter slots of the threads that park on them and the links
that queue those slots; its layout is in ``src/native/arena.h``.  A process
maps an arena once and keeps one descriptor of it, so a million objects
cost one mapping and one descriptor.

Who is alive: the kernel says
-----------------------------
Every process that maps an arena (creator, forked child, or a process
that unpickled a handle) takes an entry of the arena's attach table and
holds an open-file-description lock on byte *entry* of the segment file
for as long as it is attached (``src/native/liveness.c`` has the
protocol).  The kernel drops that lock when the process dies, SIGKILL
included, in whatever PID namespace it runs: containers that share
``/dev/shm`` (``docker --ipc=host``, a Kubernetes pod) see each other's
processes alive or dead correctly, and no pid is ever looked up.  Pids are
kept for display only.

* A process leaves at normal exit (``atexit``, and ``multiprocessing``'s
  finalizers for its workers, which end with ``os._exit``).  Whoever
  leaves last -- one lock over the whole table range succeeds -- unlinks
  the segment.
* The entries of processes that died attached are reclaimed (their
  references given back) by whoever finds them: each join and leave looks
  at a few entries (``PROBE_PER_JOIN``, a bounded cost however many
  processes are attached), and running out of entries, waiter slots or
  shared memory looks at all of them before giving up.
* :func:`clean` (``python -m mpevent clean``, and every new arena) unlinks
  arenas nobody holds a lock on, and reclaims dead entries in the others.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

from .. import _checks, _lifecycle
from . import _native, _segment
from ._native import ATTACH_ENTRIES, ENTRY_ATTACHED, ENTRY_FREE, ENTRY_RECLAIMING

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

# Entries of the attach table that each join and leave asks the kernel about:
# enough to find the dead soon, few enough that joining costs the same with
# a thousand processes attached as with one.
PROBE_PER_JOIN: Final = 4

# The segment header's first fields (arena.h): magic, layout version.
_HEADER_START: Final = struct.Struct("=QI")
_MAGIC: Final = 0x31544E4556504D00

_numbers = itertools.count()


class Attached(NamedTuple):
    """One used entry of an attach table, for display (``list``)."""

    entry: int
    pid: int  # in the attached process's own PID namespace
    alive: bool
    reclaiming: bool


def _reopen(fd: int, name: str) -> int:
    """A new open file description of the segment behind *fd* (O_CLOEXEC)."""
    try:  # works even once the name is gone
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:  # no /proc in this container
        return os.open(_segment.path_of(name), os.O_RDWR | os.O_CLOEXEC)


def _segment_size() -> int:
    return _native.segment_size(
        RECORDS_PER_ARENA, SLOTS_PER_ARENA, LINKS_PER_ARENA, SMALL_HEAP_BYTES, LARGE_HEAP_BYTES
    )


class Arena:
    """One mapped arena segment: its records, slots, links and attach table.

    ``native`` offers the record operations (``src/native/``); this class
    adds the name, this process's descriptor and attach entry, and
    unlinking.
    """

    def __init__(self, name: str, native: _native.Arena, fd: int) -> None:
        self.name = name
        self.number = next(_numbers)  # small and unique in this process (_record's keys)
        self.native = native
        self.view = memoryview(native)
        self.fd = fd  # this process's own open file description of the segment
        self.detached = False
        self.entry = -1  # this process's attach-table entry, once joined
        self.epoch = 0
        self.child: tuple[int, int, int] | None = None  # (entry, epoch, fd) for a fork
        self.shared_into_child = False  # the child's held bits are marked already
        self._reclaiming: set[int] = set()  # entries this process is reclaiming now

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
        except RuntimeError:
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

    def attached_processes(self) -> list[Attached]:
        """Every used entry: its pid (display only) and whether the kernel says it lives."""
        found = []
        for entry, state, epoch, pid in self.native.entries():
            if entry == self.entry and epoch == self.epoch:
                alive = True
            else:
                alive = _native.ofd_held(self.fd, entry, 1)
            found.append(Attached(entry, pid, alive, state == ENTRY_RECLAIMING))
        return found

    def _take_entry(self, entry: int) -> None:
        """Make *entry*, whose byte this process has locked, its own (arena lock held)."""
        self.native.held_wipe(entry)
        self.epoch = self.native.entry_write(entry, ENTRY_ATTACHED, os.getpid())
        self.entry = entry
        self.native.adopt_entry(entry, self.epoch, self.fd)

    def join(self) -> bool:
        """Take an entry of the attach table; False if the arena is being unlinked.

        A bounded number of system calls, however many processes are
        attached; a few other entries are probed for the dead on the way.
        """
        while True:
            busy = None
            with self.locked():
                if self.native.is_unlinked():
                    return False
                free = self.native.free_entry()
                if free is None:
                    self._reclaim_under_lock(ATTACH_ENTRIES)  # the dead go first
                    free = self.native.free_entry()
                if free is None:
                    raise RuntimeError(
                        f"arena {self.name} already has {ATTACH_ENTRIES} live processes"
                    )
                if _native.ofd_lock(self.fd, free, 1, False):
                    self._take_entry(free)
                else:
                    busy = free  # a cleaner holds the whole table: it is unlinking
            if busy is None:
                break
            # Wait (holding no lock of ours) for the cleaner, then look again.
            _native.ofd_lock(self.fd, busy, 1, True)
            _native.ofd_unlock(self.fd, busy, 1)
        self.reclaim_dead_processes(PROBE_PER_JOIN)
        return True

    def reclaim_dead_processes(self, limit: int = ATTACH_ENTRIES) -> int:
        """Give back the references of processes that died attached; how many died.

        Looks at up to *limit* entries.  Each dead entry's byte is locked by
        this process, and the entry marked RECLAIMING, under the arena lock,
        so exactly one process reclaims it; the records it held are
        released outside the lock (releasing takes record locks, which come
        before the arena lock).  A reclaimer that dies midway drops the
        byte: whoever finds a RECLAIMING entry nobody holds frees it
        without releasing anything more, so the rest leaks and nothing is
        released twice.
        """
        if self.fd < 0:
            return 0
        with self.locked():
            dead = self._reclaim_under_lock(limit)
        for entry in dead:
            try:
                self._give_back_entry(entry)
            finally:
                with self.locked():
                    self.native.entry_write(entry, ENTRY_FREE, 0)
                    _native.ofd_unlock(self.fd, entry, 1)
                    self._reclaiming.discard(entry)
        return len(dead)

    def _reclaim_under_lock(self, limit: int) -> list[int]:
        """Mark the dead among *limit* entries as ours to reclaim (arena lock held)."""
        dead = []
        for entry, state in self.native.probe_dead(self.fd, limit):
            if entry in self._reclaiming:
                continue  # another thread of ours reclaims it: our lock, invisible to us
            if state == ENTRY_RECLAIMING:
                self.native.entry_write(entry, ENTRY_FREE, 0)  # its reclaimer died midway
            elif _native.ofd_lock(self.fd, entry, 1, False):
                self.native.entry_write(entry, ENTRY_RECLAIMING, os.getpid())
                self._reclaiming.add(entry)
                dead.append(entry)
        return dead

    def _give_back_entry(self, entry: int) -> None:
        """Release what a dead entry's process held: records, views, slots."""
        self.native.held_release_all(entry)
        self.native.heap_forget(entry)  # its views and its unpublished values
        self.native.held_wipe(entry)
        for slot, owner, epoch in self.native.slot_owners():
            if owner == entry:
                self.native.slot_reclaim(slot, owner, epoch)

    def prepare_child(self) -> None:
        """Before a fork: an entry, locked by a descriptor of its own, for the child.

        So the child is alive in its own right from its first instruction;
        if it dies (or the fork fails) the entry is simply dead.
        """
        self.child = None
        self.shared_into_child = False
        if self.detached or self.entry < 0:
            return
        fd = _reopen(self.fd, self.name)
        with self.locked():
            free = self.native.free_entry()
            if free is not None and _native.ofd_lock(fd, free, 1, False):
                self.native.held_wipe(free)
                epoch = self.native.entry_write(free, ENTRY_ATTACHED, 0)
                self.child = (free, epoch, fd)
        if self.child is None:
            os.close(fd)  # no room: the child joins by itself after the fork
        # The child's references, taken now, while this process still holds
        # every record (taken in the child, they would race with our dropping
        # one right after the fork); marked in its entry when it has one.
        child_entry = -1 if self.child is None else self.child[0]
        self.native.held_share(self.entry, child_entry)
        self.shared_into_child = self.child is not None

    def after_fork_in_parent(self) -> None:
        if self.child is not None:
            os.close(self.child[2])  # the child's lock is the child's alone now
            self.child = None

    def after_fork_in_child(self) -> None:
        if self.detached:
            return
        inherited = self.fd
        if self.child is not None:
            self.entry, self.epoch, self.fd = self.child
            self.child = None
            with self.locked():
                self.native.entry_write(self.entry, ENTRY_ATTACHED, os.getpid())
            self.native.adopt_entry(self.entry, self.epoch, self.fd)
            os.close(inherited)  # it must not keep a dead parent looking alive
        else:
            self.fd = _reopen(inherited, self.name)
            os.close(inherited)
            self.entry = -1
            if not self.join():
                self.detached = True
                return
        self.native.after_fork_child(self.entry)  # pin the views it inherited

    def leave(self) -> bool:
        """Give up this process's entry; unlink if no other process is attached.

        The mapping stays: handles still alive in this process keep working
        until it exits.  Returns True if this call unlinked the segment.
        """
        if self.detached:
            return False
        self.detached = True
        if self.entry < 0:
            return False
        self.native.heap_forget(self.entry)  # before the entry can be reused
        unlinked = False
        with self.locked():
            self.native.entry_write(self.entry, ENTRY_FREE, 0)
            # One call: does anyone else hold any byte of the table?  Done
            # under the arena lock, and our own byte given up before it is
            # released, so of two last leavers the second sees the first gone.
            if _native.ofd_lock(self.fd, 0, ATTACH_ENTRIES, False):
                self.native.mark_unlinked()
                unlinked = _segment.unlink(self.name)
            _native.ofd_unlock(self.fd, 0, ATTACH_ENTRIES)
        if not unlinked:
            self.reclaim_dead_processes(PROBE_PER_JOIN)
        return unlinked


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
            got = arena.native.record_alloc(kind)
            if got is not None:
                return arena, got[0], got[1]
    with _arenas_lock:
        clean()
        arena = Arena.create()
        _arenas[arena.name] = arena
        _lifecycle.need_exit_hooks()
    got = arena.native.record_alloc(kind)
    if got is None:
        raise MemoryError("a new mpevent arena has no room for a record")  # pragma: no cover
    return arena, got[0], got[1]


def leave_all() -> None:
    """Leave every arena this process joined (its exit hook, after the records')."""
    for arena in list(_arenas.values()):
        arena.leave()


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
    """Unlink arenas no live process is attached to; return their names.

    Never unlinks an arena a live process is attached to (in any PID
    namespace), nor one being created right now; in live arenas, gives
    back the references of the processes that died attached.
    """
    removed = []
    for name in _segment.list_names():
        if name.startswith(_segment.NAME_PREFIX) or name in _arenas:
            continue  # object names are cleaned by _names
        try:
            fd, size = _segment.open_existing(name)
        except (FileNotFoundError, PermissionError):
            continue
        try:
            if _clean_one(name, fd, size, dry_run):
                removed.append(name)
        finally:
            os.close(fd)
    return removed


def _clean_one(name: str, fd: int, size: int, dry_run: bool) -> bool:
    """Unlink one arena if abandoned, else reclaim its dead; True if unlinked."""
    magic, version = _HEADER_START.unpack(os.pread(fd, _HEADER_START.size, 0).ljust(12, b"\0"))
    if magic == _MAGIC and version != _native.LAYOUT_VERSION:
        return False  # another mpevent's layout: its liveness rules are not ours
    for attempt in range(2):
        # One call: does any process hold any byte of the attach table?
        if _native.ofd_lock(fd, 0, ATTACH_ENTRIES, False):
            try:
                if not dry_run and magic == _MAGIC:
                    native = _native.Arena(fd, size)
                    native.mark_unlinked()  # a joiner waiting for our lock gives up
                return dry_run or _segment.unlink(name)
            finally:
                _native.ofd_unlock(fd, 0, ATTACH_ENTRIES)
        if dry_run or attempt or magic != _MAGIC:
            return False  # alive, or being created by a live process
        native = _native.Arena(fd, size)
        try:
            native.validate()
        except ValueError:
            return False
        Arena(name, native, fd).reclaim_dead_processes()  # live: give back what the dead held
    return False
