"""Record: this process's counted reference to one record of an arena.

A record lives as long as some process references it.  Its reference count
(in shared memory, see ``src/native/records.c``) counts

* one per process holding it (however many :class:`Record` objects it
  has: this module counts those), marked in the process's held bitmap;
* one per pickle in flight: pickling *pins* the record, so a handle sent to a
  Pool worker survives the sender dropping its own at once, and the first
  unpickling *adopts* that reference instead of taking a new one;
* one per name (``_names``).

A forked child inherits its parent's Record objects; the parent takes a
reference for the child on each record just before the fork, so either
side can drop its own at once.  A
process that dies without running its finalizers (SIGKILL, ``os._exit``)
leaves its references behind; the next process to join or leave the arena
finds it dead and releases them from its held bitmap.

The public classes (``event.py``, ``asyncresult.py``, ``_linkable.py``)
hold a Record and call only the methods under "the backend interface"
below; they know nothing of arenas, slots or segments.  A second backend
(a Redis server, say) offers a class with the same methods.
"""

from __future__ import annotations

import gc
import os
import pickle
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .. import _lifecycle
from . import _arena, _attach, _hub, _linux, _loop, _native, _parking, _storage
from ._arena import Arena

BOOT_ID: Final = _linux.boot_id()


class Reference(NamedTuple):
    """What a pickled handle carries: names and numbers, never the state."""

    arena: str
    record: int
    serial: int
    kind: int
    boot_id: str
    uid: int


# Record objects of this process per record: the process holds one shared
# reference (and one held bit) while this is above zero.  Keys and values
# are plain ints (no tuple for the garbage collector to track per object):
# key = arena number << 32 | index, value = serial << 32 | count.
# Reentrant: a garbage collection inside _take may finalize a Record and
# call _drop.
_holders: dict[int, int] = {}
_holders_lock = threading.RLock()
_COUNT = 0xFFFFFFFF


def _key(arena: Arena, index: int) -> int:
    return arena.number << 32 | index


def _held() -> list[tuple[Arena, int, int]]:
    """(arena, index, serial) of every record this process holds."""
    # A copy first (one allocation, made in C): the collector may run during
    # the loop and finalize a Record, whose _drop changes _holders.
    holders = _holders.copy()
    arenas = {arena.number: arena for arena in _arena.attached()}
    return [(arenas[key >> 32], key & _COUNT, value >> 32) for key, value in holders.items()]


def _take(arena: Arena, index: int, serial: int, adopt: bool) -> None:
    """Count one more Record object of this process for the record.

    *adopt*: a pickle pinned a reference for us; the first holder takes it
    over, later ones give it back.  Raises LookupError (from C) if the
    record was freed meanwhile.
    """
    key = _key(arena, index)
    with _holders_lock:
        count = _holders.get(key, 0) & _COUNT
        if count == 0:
            # Count first, mark second: dying in between leaks, never double-frees.
            arena.native.record_retain(index, serial, adopt)
            _mark_or_release(arena, index)
        elif adopt:
            arena.native.record_retain(index, serial, True)
            arena.native.record_release(index)  # we hold one already: drop the pin
        _holders[key] = serial << 32 | (count + 1)


def _mark_or_release(arena: Arena, index: int) -> None:
    """Set this process's held bit, or give the reference just taken back.

    Marking may need a new page of the bitmap: when shared memory is full
    that is a MemoryError, and the reference must not stay behind.
    """
    try:
        arena.native.held_mark(arena.entry, index, True)
    except BaseException:
        arena.native.record_release(index)
        raise


def _drop(arena: Arena, index: int, serial: int) -> None:
    """Count one Record object fewer; the last one releases the reference.

    A finalizer's path, run cold (a handle dropped after a long wait): no
    closure, and the release itself one C call.
    """
    key = _key(arena, index)
    with _holders_lock:
        count = (_holders.pop(key, 0) & _COUNT) - 1
        if count < 0:
            return  # given back already, by _release_all() at exit
        if count:
            _holders[key] = serial << 32 | count
            return
        # Deferred only inside an arena-locked section of this thread; then a
        # concurrent _take may interleave, which can leak but never double-free.
        _attach.run_or_defer(_give_back, arena, index)


def _give_back(arena: Arena, index: int) -> None:
    # Unmark first, uncount second (in C): dying in between leaks, never
    # double-frees.  The last reference frees the values too.
    arena.native.record_give_back(arena.entry, index)


class Record:
    """A counted reference to one record; released when garbage collected."""

    __slots__ = ("__weakref__", "arena", "held", "index", "kind", "native", "serial")

    def __init__(self, arena: Arena, index: int, serial: int, kind: int) -> None:
        self.arena = arena
        self.native = arena.native
        self.index = index
        self.serial = serial
        self.kind = kind
        self.held = True
        # A Record refers only to its arena and ints: it is never in a cycle,
        # and a million of them must not keep the garbage collector busy.
        _native.untrack(self)

    @classmethod
    def allocate(cls, kind: int) -> Record:
        """A new record of *kind* (flag down, no waiters)."""
        arena, index, serial = _arena.allocate(kind)  # with one reference: ours
        with _holders_lock:
            _mark_or_release(arena, index)
            _holders[_key(arena, index)] = serial << 32 | 1
        return cls(arena, index, serial, kind)

    @classmethod
    def from_reference(cls, reference: Reference, expected_kind: int, adopt: bool = True) -> Record:
        """Rebuild a reference that was pickled (in this or another process).

        *adopt*: take over the reference the pickle pinned (False: take a
        new one, as for a name).  Raises ValueError for a handle made on
        another machine, PermissionError for one of another user,
        FileNotFoundError if its arena is gone, LookupError if its record
        was freed, TypeError if it is a handle of another kind.
        """
        if reference.boot_id != BOOT_ID:
            raise ValueError(
                "this mpevent handle was pickled on another machine (or before a reboot); "
                "shared-memory objects only cross processes of one machine"
            )
        if reference.uid != os.geteuid():
            raise PermissionError(
                f"this mpevent handle belongs to uid {reference.uid}, not to uid {os.geteuid()}"
            )
        if reference.kind != expected_kind:
            raise TypeError(
                f"handle of kind {reference.kind} cannot be rebuilt as kind {expected_kind}"
            )
        arena = _arena.by_name(reference.arena)
        _take(arena, reference.record, reference.serial, adopt)
        return cls(arena, reference.record, reference.serial, reference.kind)

    def reference(self) -> Reference:
        """Pin the record for a pickle and describe it."""
        self.native.record_pin(self.index)
        return self.describe()

    def describe(self) -> Reference:
        """Describe the record without taking a reference."""
        return Reference(self.arena.name, self.index, self.serial, self.kind, BOOT_ID, os.geteuid())

    def release(self) -> None:
        """Drop this reference now (once); the record is freed with the last one."""
        if not self.held:
            return
        self.held = False
        _drop(self.arena, self.index, self.serial)

    def __del__(self) -> None:
        # release() inlined: this runs cold, once per dropped handle.  No
        # contextlib here: at interpreter shutdown module globals may be gone.
        try:
            if self.held:
                self.held = False
                _drop(self.arena, self.index, self.serial)
        except Exception:  # interpreter shutdown: nothing left to release into
            pass

    # --- the backend interface: all the public classes use -----------------

    def is_set(self) -> bool:
        """The flag, read without a lock or a system call."""
        return self.native.is_set(self.index)

    def set(self) -> None:
        """Raise the flag and wake every waiter in every process."""
        self.native.set(self.index)

    def clear(self) -> None:
        self.native.clear(self.index)

    def wait(self, timeout: float | None) -> bool:
        """Block until set or *timeout* passes; True if it was set.

        True also when the record was set and cleared again while we slept:
        a waiter never misses a set() that happened during its wait.  See
        ``_parking.wait``.
        """
        return _parking.wait(self.arena, self.index, timeout)

    @staticmethod
    def wait_many(records: Sequence[Record], timeout: float | None) -> list[int]:
        """Positions of records seen set, in order; see _parking.wait_many."""
        return _parking.wait_many(records, timeout)

    @staticmethod
    def wait_in_greenlet(linkables: Sequence[Any], timeout: float | None) -> list[int]:
        """In a greenlet: the hub's loop is woken through an eventfd (_loop)."""
        return _loop.wait_in_greenlet(linkables, timeout)

    def holds(self, which: int) -> bool:
        """True if value slot *which* (0 value, 1 exception) is filled.

        A result whose claimer died unset holds its ProcessDied exception
        (written by C when the death was found).
        """
        return self.native.holds(self.index, which)

    def store(self, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
        """Store a pickled value in slot *which* and raise the flag."""
        _storage.store(self.arena, self.index, which, inband, buffers)

    def load(
        self, which: int, copy: bool = False, known: int = -1, woken: bool = False
    ) -> tuple[int, int, object]:
        """(generation, slot, object) of slot *which* or EITHER; see RecordBackend.load.

        One C call.  *woken* changes nothing here: reading shared memory
        costs no round trip.  Large buffers are zero-copy read-only views
        unless *copy*.
        """
        return _storage.load(self.arena, self.index, which, known, copy)

    def wait_async(self, handle: Any, timeout: float | None) -> Coroutine[Any, Any, bool]:
        """Await a set on the running loop: its own slot and socket (_loop).

        _loop's coroutine itself, not one around it: a frame fewer to resume
        on the cold CPU a wakeup lands on."""
        return _loop.wait(self.arena, self.index, timeout)

    def rawlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        """Run callback(handle) once on this process's hub after the next set."""
        _hub.rawlink(self.arena, handle, callback)

    def unlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        hub = _hub.existing_hub(self.arena)
        if hub is not None:
            hub.unlink(handle, callback)

    def unlink_all(self, handle: Any) -> None:
        """Forget every callback of *handle* (before it is closed)."""
        hub = _hub.existing_hub(self.arena)
        if hub is not None:
            hub.forget(handle)

    def claim(self) -> None:
        """Promise that this process sets the record; see AsyncResult.claim."""
        self.native.claim(self.index)
        _claims.add((self.arena, self.index))

    def info(self) -> dict[str, int]:
        """kind, serial, flag, generation, refcount, inflight, waiters (for `list`)."""
        return self.native.record_info(self.index)


def _release_all() -> None:
    """Give back every reference this process holds (at exit)."""
    with _holders_lock:
        _holders.clear()  # Record objects finalized later find nothing to drop
    for arena in _arena.attached():
        if not arena.detached and arena.entry >= 0:
            arena.native.held_release_all(arena.entry)


# Results this process promised to set (claim()), as (arena, index).
_claims: set[tuple[Arena, int]] = set()


def _abandon_claims() -> None:
    """At exit: fail every result this process promised and did not set."""
    for arena, index in list(_claims):
        arena.native.claim_abandon(index)  # nothing if set meanwhile
    _claims.clear()


_gc_was_enabled = False


def _before_fork() -> None:
    # The arenas' part (next) takes the child's references while this
    # process holds every record.  The lock keeps other threads' drops out;
    # the collector is paused so that no finalizer of this thread drops a
    # record between the child's references being taken and the fork (seen
    # on 3.13: a Record freed mid-loop).
    global _gc_was_enabled
    _gc_was_enabled = gc.isenabled()
    gc.disable()
    _holders_lock.acquire()


def _after_fork_in_parent() -> None:
    _holders_lock.release()
    if _gc_was_enabled:
        gc.enable()


def _after_fork_in_child() -> None:
    global _holders_lock
    _holders_lock = threading.RLock()
    _claims.clear()  # the parent's promises are the parent's
    if any(not a.detached and not a.shared_into_child for a in _arena.attached()):
        for arena, index, _ in _held():
            if not arena.detached and not arena.shared_into_child:
                arena.native.held_mark(arena.entry, index, True)  # joined by itself
    if _gc_was_enabled:
        gc.enable()


_lifecycle.on_fork(
    "records",
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
_lifecycle.at_exit("claims", _abandon_claims)
_lifecycle.at_exit("records", _release_all)


if TYPE_CHECKING:  # mypy --strict proves that Record implements the interface
    from .._interface import RecordBackend

    _conforms: type[RecordBackend] = Record
