"""A parking lot: one waiter slot, and the links it has queued on records.

Every waiter that holds links of its own -- the hub thread (``_hub``), an
event loop or a gevent hub (``_loop``) -- parks through one of these, and
differs only in how it sleeps (a futex, an eventfd and a datagram socket)
and in what it does with a fired link (run callbacks, resolve a future).
A blocking thread's single wait is the same idea done whole in C
(``src/native/wait.c``), on the thread's own slot (``_parking``).

The contract (like trio's ``ParkingLot``, across processes; the lot is not
thread-safe: its driver serialises calls, the hub under its lock, a loop
on its own thread):

* :meth:`queue` links a payload to record *index*: the next ``set()``, in
  any process, fires the link and wakes the slot.  A record set already is
  answered at once (None): nothing is queued, and the driver treats the
  payload as fired (the already-set case).
* :meth:`fired` gives the links that fired since the driver last looked,
  one C call for any number of links; :meth:`moved` also applies the one
  rule for a wakeup that never came (``record_recheck``, claims.c: a
  setter or claimer that died) -- the driver asks it when the process's
  one watch (``watch.c``) flagged its slot, which it does only when one
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
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._arena import Arena
from ._native import Watchlist

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
        # GIL (watch.c): it flags the slot when a record moved with no
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
