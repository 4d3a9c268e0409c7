"""The attach table: who is attached to an arena, and whether the kernel says they live.

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
* A fork gives the child an entry locked by a descriptor of its own
  before the fork (``prepare_child``), so it is alive in its own right
  from its first instruction.

:class:`AttachTable` is this half of an arena; ``_arena.Arena`` adds the
mapping, waiter slots and the process's list of arenas, and ``_clean``
uses a bare table to reclaim the dead of arenas this process never joined.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

from . import _linux, _native, _segment, _spill
from ._native import ATTACH_ENTRIES, ENTRY_ATTACHED, ENTRY_FREE, ENTRY_RECLAIMING

# Entries of the attach table that each join and leave asks the kernel about:
# enough to find the dead soon, few enough that joining costs the same with
# a thousand processes attached as with one.
PROBE_PER_JOIN: Final = 4


class Attached(NamedTuple):
    """One used entry of an attach table, for display (``list``)."""

    entry: int
    pid: int  # in the attached process's own PID namespace
    alive: bool
    reclaiming: bool


def reopen(fd: int, name: str) -> int:
    """A new open file description of the segment behind *fd* (O_CLOEXEC)."""
    try:  # works even once the name is gone
        return _linux.reopen(fd)
    except OSError:  # no /proc in this container
        return os.open(_segment.path_of(name), os.O_RDWR | os.O_CLOEXEC)


class AttachTable:
    """An arena's attach table, through this process's descriptor *fd* of it."""

    def __init__(self, name: str, native: _native.Arena, fd: int) -> None:
        self.name = name
        self.native = native
        self.fd = fd  # this process's own open file description of the segment
        self.detached = False  # left (or never could join): attach nothing more
        self.entry = -1  # this process's attach-table entry, once joined
        self.epoch = 0
        self.child: tuple[int, int, int, int] | None = None  # (entry, epoch, fd, label) for a fork
        self.shared_into_child = False  # the child's held bits are marked already
        self._reclaiming: set[int] = set()  # entries this process is reclaiming now
        self._take_lock_owner(fd)

    def _take_lock_owner(self, fd: int) -> None:
        """Make this process a lock owner of the arena, through *fd*, before any lock.

        Its lock words then name it, and a waiter can tell whether it died
        holding one (``src/native/locks.c``).  With every owner in use (as
        many processes as the attach table holds) its locks are anonymous:
        they work, but are never taken over.
        """
        try:
            label = self.native.owner_reserve(fd)
        except _native.Full:
            return
        self.native.owner_adopt(label, fd)

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
                try:
                    free = self.native.free_entry()
                except _native.Full:
                    self._reclaim_under_lock(ATTACH_ENTRIES)  # the dead go first
                    free = self.native.free_entry()  # still Full: that many live processes
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
        if dead:  # one of them may have died writing a spill file
            _spill.remove_orphans(self.native)
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
        fd = reopen(self.fd, self.name)
        with self.locked():
            try:
                free = self.native.free_entry()
            except _native.Full:
                free = None
            label = 0  # the child's lock owner, taken with its own descriptor
            if free is not None and _native.ofd_lock(fd, free, 1, False):
                with contextlib.suppress(_native.Full):
                    label = self.native.owner_reserve(fd)
            if free is not None and label:
                self.native.held_wipe(free)
                epoch = self.native.entry_write(free, ENTRY_ATTACHED, 0)
                self.child = (free, epoch, fd, label)
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
        # Until it has a lock owner of its own the child's locks carry its
        # parent's label: it must take none before (liveness.c).
        inherited = self.fd
        if self.detached:
            if inherited >= 0:
                try:
                    self.fd = reopen(inherited, self.name)
                except OSError:  # no /proc and the name is gone: keep the parent's
                    return
                os.close(inherited)
                self._take_lock_owner(self.fd)
            return
        if self.child is not None:
            self.entry, self.epoch, self.fd, label = self.child
            self.native.owner_adopt(label, self.fd)
            self.child = None
            with self.locked():
                self.native.entry_write(self.entry, ENTRY_ATTACHED, os.getpid())
            self.native.adopt_entry(self.entry, self.epoch, self.fd)
            os.close(inherited)  # it must not keep a dead parent looking alive
        else:
            self.fd = reopen(inherited, self.name)
            os.close(inherited)
            self._take_lock_owner(self.fd)
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
        if unlinked:
            _spill.remove_all(*self.native.spill_settings())  # its values' files go with it
        else:
            self.reclaim_dead_processes(PROBE_PER_JOIN)
        return unlinked


# --- work that must wait for the arena lock to be released -----------------

_section = threading.local()  # depth: arena-locked sections this thread is in; deferred


def run_or_defer(action: Callable[..., object], *args: object) -> None:
    """Run ``action(*args)`` now, or, inside this thread's arena-locked section, after it.

    For finalizers (a handle or a thread's waiter slots being released):
    they may run at any allocation, including one made while this thread
    holds an arena lock.  The arguments are passed, not closed over, so the
    common case (no section) makes no closure.
    """
    if getattr(_section, "depth", 0):
        _section.__dict__.setdefault("deferred", []).append((action, args))
    else:
        action(*args)


def _run_deferred() -> None:
    deferred = _section.__dict__.pop("deferred", [])
    for action, args in deferred:
        action(*args)
