"""Waiting, in one place: the parking lot, and a blocking thread's waits.

Every waiter of shared memory parks through this module, and the C file
under it (``src/native/wait.c``: every sleep of a slot, and the one
watch).  Drivers sit above it and differ only in how they sleep and what
they do with a fired link: the hub thread (``_hub``: run callbacks), each
event loop or gevent hub (``_loop``: resolve a future, wake a greenlet),
and a blocking thread (below: return to its caller).

The parking lot
---------------

A :class:`ParkingLot` is one waiter slot and the links it has queued on
records; the hub and each loop hold one.

The contract (like trio's ``ParkingLot``, across processes; the lot is not
thread-safe: its driver serialises calls, the hub under its lock, a loop
on its own thread -- except :meth:`fired` and :meth:`get`, which each read
the lot's dict in one atomic step and may run beside the others: the hub
runs a wakeup's callbacks before it takes its lock):

* :meth:`queue` links a payload to record *index*: the next ``set()``, in
  any process, fires the link and wakes the slot.  A record set already is
  answered at once (None): nothing is queued, and the driver treats the
  payload as fired (the already-set case).
* :meth:`fired` gives the links that fired since the driver last looked,
  one C call for any number of links; :meth:`moved` also applies the one
  rule for a wakeup that never came (``record_recheck``, claims.c: a
  setter or claimer that died) -- the driver asks it when the process's
  one watch (``wait.c``) flagged its slot, which it does only when one
  of the lot's records moved with no wakeup, or the lot is empty (so that
  an idle driver retires).  An idle driver with links is never woken.
* :meth:`leave` takes a link out, fired or not, and keeps it for reuse.
  Every link leaves this way, under its record's lock (``dequeue``): that
  is what tells the lot that no late setter still writes to the link or
  the slot, so the slot may be reused or freed (``wake_fired``).
* :meth:`retire` gives every link and the slot back to the arena.

Why the slot is the lot's and not a thread's: a driver that waits on
thousands of records needs one sleeping word, not one per record, and a
waiter on many records at once needs to know which fired.

A blocking thread
-----------------

A thread that blocks (``Event.wait``, ``AsyncResult.get``, ``mpevent.wait``)
sleeps on its own waiter slot, in one C call (``wait`` or ``wait_any``:
look, spin for a single wait, park, recheck); ``Handle.wait`` makes that
call without this module at all when nothing needs Python
(``src/native/handle.c``).  The spin limit (``MPEVENT_SPIN``) and the hand-over switch
(``MPEVENT_HANDOVER``) are read here.

Each thread that ever waits holds one *waiter slot* per arena (a futex
word in shared memory, ``src/native/slots.c``).  Waiting on a record
queues a *link* (slot -> record) on the record's waiter list; ``set()``,
in whatever process it runs, dequeues every link, marks it fired and
wakes its slot.  A slot can be linked to many records at once, which is
how one thread waits on many objects (``wait_many``) without a thread or
a kernel object per record.

Slots are per thread, not per record: a million records cost no slots,
and a thread's slot is returned to the arena when the thread ends.  After
a fork the child allocates fresh slots (its parent's threads still own
theirs).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from .. import _checks, _lifecycle
from . import _attach, _native
from ._arena import Arena
from ._native import Watchlist

if TYPE_CHECKING:
    from ._record import Record

T = TypeVar("T")


class Parked(Generic[T]):
    """A queued link's record, its generation when queued, and the driver's payload."""

    __slots__ = ("generation", "index", "payload")

    def __init__(self, index: int, generation: int, payload: T) -> None:
        self.index = index
        self.generation = generation
        self.payload = payload


class ParkingLot(Generic[T]):
    """One waiter slot of *arena* and its queued links (see the module's contract)."""

    __slots__ = ("arena", "native", "pending", "slot", "spare", "watchlist")

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.native = arena.native
        self.slot = arena.allocate_slot()
        self.native.reset(self.slot)
        self.pending: dict[int, Parked[T]] = {}  # link -> what it waits for
        self.spare: list[int] = []  # links out of every queue, kept for reuse
        # The same links, as the process's one watch reads them without the
        # GIL (wait.c): it flags the slot when a record moved with no
        # wakeup (a dead setter or claimer), or when the lot is empty.
        self.watchlist = Watchlist(self.native)

    def queue(self, index: int, payload: T) -> int | None:
        """Queue a link on record *index* for *payload*; None if it is set already."""
        link = self.spare.pop() if self.spare else self.native.link_alloc(self.slot)
        state = self.native.enqueue(index, link, self.slot)
        if state & 1:
            self.spare.append(link)
            return None
        self.pending[link] = Parked(index, state >> 1, payload)
        try:
            self.watchlist.add(link, index, state >> 1)
        except BaseException:  # no memory for it: nothing stays queued
            self.leave(link)
            raise
        return link

    def get(self, link: int) -> T | None:
        """The payload of a queued link, or None if it left."""
        parked = self.pending.get(link)
        return None if parked is None else parked.payload

    def fired(self) -> list[int]:
        """The queued links that a set() fired (one C call)."""
        return self.native.fired_among(self.pending)

    def moved(self) -> list[int]:
        """The queued links fired, or whose record moved by the one rule (a tick)."""
        return [
            link
            for link, parked in list(self.pending.items())
            if self.native.fired(link) or self.native.recheck(parked.index, parked.generation)
        ]

    def leave(self, link: int) -> T | None:
        """Take *link* out (fired or not) and keep it; its payload, or None if it left already."""
        parked = self.pending.pop(link, None)
        if parked is None:
            return None
        self.watchlist.remove(link)
        self.native.dequeue(parked.index, link)
        self.spare.append(link)
        return parked.payload

    def statistics(self) -> dict[str, int]:
        """The slot, how many links wait, and how many are kept for reuse."""
        return {"slot": self.slot, "pending": len(self.pending), "spare": len(self.spare)}

    def retire(self) -> None:
        """Every link out and back to the arena, then the slot."""
        for link in list(self.pending):
            self.leave(link)
        for link in self.spare:
            self.native.link_free(link)
        self.spare.clear()
        self.native.slot_free(self.slot)


# --- a blocking thread --------------------------------------------------------

# MPEVENT_SPIN is read here only, so that a malformed value is an error that
# names it; C applies the CPU rule to it (spin_for_flag in spin.c).
SPIN_LIMIT = _native.set_spin_limit(_checks.count_from_env("MPEVENT_SPIN", _native.SPIN_LIMIT_MAX))
# The same for MPEVENT_HANDOVER: a set() that woke another process yields
# its CPU when nothing else is runnable (handover_after_wake in spin.c).
_native.set_handover(_checks.switch_from_env("MPEVENT_HANDOVER", True))

_fork_epoch = 0


class _SlotLease:
    """The slots one thread holds, one per arena; freed when the thread ends."""

    __slots__ = ("epoch", "links", "pid", "slots")

    def __init__(self) -> None:
        self.epoch = _fork_epoch
        self.pid = os.getpid()
        self.slots: dict[Arena, int] = {}
        # Extra links (beyond each slot's own) kept for reuse by wait_many.
        self.links: dict[Arena, list[int]] = {}

    def __del__(self) -> None:
        # Inherited across fork: the parent's thread owns these.  The pid
        # test matters for a fork made from a thread other than the main one
        # (Pool and executor helper threads do that): in the child, CPython
        # drops the other threads' locals -- and runs this -- before any
        # at-fork hook could bump the epoch.
        if self.epoch != _fork_epoch or self.pid != os.getpid():
            return
        # No contextlib here: at interpreter shutdown module globals may be gone.
        try:  # noqa: SIM105
            _attach.run_or_defer(self._give_back)
        except Exception:  # interpreter shutdown
            pass

    def _give_back(self) -> None:
        for arena, links in self.links.items():
            for link in links:
                arena.native.link_free(link)
        for arena, slot in self.slots.items():
            arena.native.slot_free(slot)


class _ThreadLocal(threading.local):
    lease: _SlotLease | None = None


_local = _ThreadLocal()


def _lease() -> _SlotLease:
    lease = _local.lease
    if lease is None or lease.epoch != _fork_epoch:
        lease = _local.lease = _SlotLease()
    return lease


def slot_for(arena: Arena) -> int:
    """This thread's waiter slot in *arena*, allocated on first use."""
    lease = _local.lease
    if lease is not None and lease.epoch == _fork_epoch:  # the hot path: no call
        slot = lease.slots.get(arena)
        if slot is not None:
            return slot
    lease = _lease()
    slot = lease.slots[arena] = arena.allocate_slot()
    return slot


def _known_slot(arena: Arena) -> int:
    """This thread's waiter slot in *arena*, or -1: never allocates."""
    lease = _local.lease
    if lease is None or lease.epoch != _fork_epoch:
        return -1
    return lease.slots.get(arena, -1)


def wait(arena: Arena, index: int, timeout: float | None) -> bool:
    """Block until record *index* is set or *timeout* passes; True if it was set.

    One C call (``wait`` in ``src/native/wait.c``): it answers a set
    record (and fails a lost claim) before it needs a slot, spins, parks
    and owns the recheck.  A thread's first sleep in an arena makes a
    second call, with the slot allocated then: a wait that does not sleep
    never needs memory.
    """
    native = arena.native
    woken = native.wait(index, _known_slot(arena), timeout)
    if woken is None:
        woken = native.wait(index, slot_for(arena), timeout)
    return bool(woken)


def wait_many(records: Sequence[Record], timeout: float | None) -> list[int]:
    """Block until any of *records* is set; the positions seen set, in order.

    Positions are indices into *records*, in the order the records were
    seen set; [] if *timeout* passes first (0: only look).
    """
    arenas = {record.arena for record in records}
    if len(arenas) > 1:
        return _poll_many_arenas(records, timeout)
    (arena,) = arenas
    indices = [record.index for record in records]
    native = arena.native
    ready = native.wait_any(indices, _known_slot(arena), _links(arena), timeout)
    if ready is None:  # it must sleep, and this thread has no slot here yet
        ready = native.wait_any(indices, slot_for(arena), _links(arena), timeout)
    return ready or []


def _links(arena: Arena) -> list[int]:
    """This thread's extra links in *arena*, kept for its next multi-wait."""
    return _lease().links.setdefault(arena, [])


def _poll_many_arenas(records: Sequence[Record], timeout: float | None) -> list[int]:
    # A thread sleeps on one futex word, and words are per arena: records
    # from several arenas (rare: > millions of records, or handles from
    # unrelated processes) are polled instead, each arena's with one look.
    deadline = None if timeout is None else time.monotonic() + timeout
    groups: dict[Arena, list[int]] = {}
    for position, record in enumerate(records):
        groups.setdefault(record.arena, []).append(position)
    delay = 0.0005
    while True:
        ready = [
            positions[i]
            for arena, positions in groups.items()
            for i in _look(arena, [records[p].index for p in positions])
        ]
        if ready:
            return ready
        if deadline is not None and time.monotonic() >= deadline:
            return []
        time.sleep(delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, 0.05)


def _look(arena: Arena, indices: list[int]) -> list[int]:
    """Positions of *indices* set now (or failed now: a lost claim); no slot, no sleep."""
    return arena.native.wait_any(indices, -1, [], 0.0) or []


def _after_fork_in_child() -> None:
    global _fork_epoch
    _fork_epoch += 1


_lifecycle.on_fork("parking", after_in_child=_after_fork_in_child)
