"""Where a blocking thread parks: its waiter slots, and its waits on one record or many.

A thread that blocks (``Event.wait``, ``AsyncResult.get``, ``mpevent.wait``)
sleeps here, on its own waiter slot, in one C call (``wait`` or
``wait_any`` in ``src/native/wait.c``: look, spin for a single wait, park,
recheck).  Not every waiter parks here: the hub thread (``_hub``) and each
event loop or gevent hub (``_loop``) hold slots of their own and sleep
their own way, over the same C links and slots.  The spin limit
(``MPEVENT_SPIN``) is read here too.

Each thread that ever waits holds one *waiter slot* per arena (a futex word
in shared memory, see ``src/native/slots.c``).  Waiting on a record queues a *link*
(slot -> record) on the record's waiter list; ``set()``, in whatever process
it runs, dequeues every link, marks it fired and wakes its slot.  A slot can
be linked to many records at once, which is how one thread waits on many
objects (``park_on_many``) without a thread or a kernel object per record.

Slots are per thread, not per record: a million records cost no slots, and
a thread's slot is returned to the arena when the thread ends.  After a
fork the child allocates fresh slots (its parent's threads still own
theirs).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import _checks, _lifecycle
from . import _attach, _native
from ._arena import Arena

if TYPE_CHECKING:
    from ._record import Record

# MPEVENT_SPIN is read here only, so that a malformed value is an error that
# names it; C applies the CPU rule to it (spin_for_flag in spin.c).
SPIN_LIMIT = _native.set_spin_limit(_checks.count_from_env("MPEVENT_SPIN", _native.SPIN_LIMIT_MAX))

_fork_epoch = 0


class _SlotLease:
    """The slots one thread holds, one per arena; freed when the thread ends."""

    __slots__ = ("epoch", "links", "pid", "slots")

    def __init__(self) -> None:
        self.epoch = _fork_epoch
        self.pid = os.getpid()
        self.slots: dict[Arena, int] = {}
        # Extra links (beyond each slot's own) kept for reuse by park_on_many.
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


def park_on_many(records: Sequence[Record], timeout: float | None, count: int) -> list[int]:
    """Block until *count* of *records* are set; return their positions in order.

    Positions are indices into *records*, in the order the records were
    seen set.  Returns fewer than *count* if *timeout* passes first.
    """
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    ready: list[int] = []
    pending = list(range(len(records)))
    while pending and len(ready) < count:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        newly = _wait_any([records[i] for i in pending], remaining)
        if not newly:
            break
        ready.extend(pending[i] for i in newly)
        taken = set(newly)
        pending = [p for i, p in enumerate(pending) if i not in taken]
    return ready


def _wait_any(records: Sequence[Record], timeout: float | None) -> list[int]:
    """Positions of *records* seen set; [] when *timeout* passed (0: only look)."""
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
