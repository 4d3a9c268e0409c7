"""The hub: one thread per process that runs rawlink() callbacks.

Why a thread: a callback must run in the process that registered it,
whichever process sets the object, and nobody in this process may be
blocked waiting at that moment.  The hub thread is that somebody: a
waiter with a waiter slot of its own (not a blocking thread's of
``_parking``), parked in C, and one link per linked object, all queued at
once, so thousands of linked objects cost one sleeping thread and no
polling.

Contract (gevent's, across processes):

* ``rawlink(callback)`` queues ``callback(obj)`` to run once, on the hub
  thread, after *obj* is next set (at once if it is set already).
* Callbacks of one object run in registration order; a callback that
  raises is reported through :func:`threading.excepthook` and the hub
  carries on.  Callbacks may call ``set()``, ``rawlink()`` and ``unlink()``.
* ``unlink(callback)`` removes one registration; unknown callbacks are
  ignored.
* The hub starts lazily, is a daemon (interpreter exit never waits for
  it), and a forked child starts with none of its parent's registrations.
* A hub with nothing linked for a second ends its thread (and gives its
  waiter slot back); the next rawlink() starts a new one.  So a process
  that used callbacks a while ago has no extra thread when it forks
  (Python 3.12+ warns about forking a multi-threaded process, because
  a thread holding a lock at that moment leaves it locked in the child).

There is one hub thread per arena in use (a thread sleeps on one arena's
futex word); nearly always that is one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .. import _callbacks, _cooperative, _lifecycle
from ._arena import Arena
from ._parking import ParkingLot

Callback = Callable[[Any], object]


class _Entry:
    """One linked handle: its queued link (-1: set already) and callbacks in order."""

    __slots__ = ("callbacks", "handle", "link")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.link = -1
        self.callbacks: list[Callback] = []


class Hub:
    """The callback thread of one arena in this process."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.native = arena.native
        # The hub is the driver of one parking lot: it sleeps on the lot's
        # slot (park), and a fired link runs its entry's callbacks.
        self.lot: ParkingLot[_Entry] = ParkingLot(arena)
        self.slot = self.lot.slot
        self._lock = _cooperative.os_lock()
        self._entries: dict[int, _Entry] = {}  # id(handle) -> entry
        self._due: list[_Entry] = []  # set already when linked
        self.retired = False
        _cooperative.start_os_thread(self._run, "mpevent-hub")

    def rawlink(self, handle: Any, callback: Callback) -> bool:
        """Link *callback*; False if this hub has retired (use a new one)."""
        record = handle._record
        with self._lock:
            if self.retired:
                return False
            entry = self._entries.get(id(handle))
            if entry is None:
                entry = self._entries[id(handle)] = _Entry(handle)
                link = self.lot.queue(record.index, entry)
                if link is None:
                    self._due.append(entry)  # set already: nothing was queued
                    self.native.wake(self.slot)
                else:
                    entry.link = link
            entry.callbacks.append(callback)
        return True

    def unlink(self, handle: Any, callback: Callback) -> None:
        with self._lock:
            entry = self._entries.get(id(handle))
            if entry is None:
                return
            try:
                entry.callbacks.remove(callback)
            except ValueError:
                return
            if not entry.callbacks and entry not in self._due:
                del self._entries[id(handle)]
                self.lot.leave(entry.link)

    def forget(self, handle: Any) -> None:
        """Drop every callback of *handle* (it is being closed)."""
        with self._lock:
            entry = self._entries.pop(id(handle), None)
            if entry is None:
                return
            self._due = [due for due in self._due if due is not entry]
            if entry.link >= 0:
                self.lot.leave(entry.link)

    def linked(self) -> int:
        """How many objects have callbacks waiting (for statistics)."""
        return len(self._entries)

    def _take_fired(self, recheck: bool) -> list[_Entry]:
        """Entries whose object was set; *recheck*: also by the one rule (a tick)."""
        with self._lock:
            due, self._due = self._due, []
            # The path of every wakeup: one C call looks at every link.  A
            # wakeup that never came (a dead setter or claimer) is found by
            # the one rule, in C (claims.c), on the tick.
            links = self.lot.moved() if recheck else self.lot.fired()
            fired = due + [entry for link in links if (entry := self.lot.get(link)) is not None]
            for entry in fired:
                if self._entries.get(id(entry.handle)) is entry:
                    del self._entries[id(entry.handle)]
            return fired

    def _give_back(self, fired: list[_Entry]) -> None:
        """Take the links of *fired* out of their queues, kept for the next rawlink()."""
        with self._lock:
            for entry in fired:
                if entry.link >= 0:
                    self.lot.leave(entry.link)

    def _run(self) -> None:
        while True:
            # Untimed: the process's one watch flags the slot (2) when a
            # record moved with no wakeup or nothing is linked any more.
            woken = self.native.park(self.slot, None, self.lot.watchlist)
            # Re-arm before looking, so a set() that lands while callbacks
            # run wakes the next park() instead of being missed.
            self.native.reset(self.slot)
            fired = self._take_fired(recheck=woken != 1)
            for entry in fired:
                for callback in entry.callbacks:
                    _callbacks.run(callback, entry.handle)
            # Bookkeeping after the callbacks: they run sooner by what it
            # costs on the cold CPU a wakeup lands on.
            self._give_back(fired)
            if woken != 1 and self._retire_if_idle():
                return

    def _retire_if_idle(self) -> bool:
        """End the hub after a second with nothing linked; True if it ended."""
        with self._lock:
            if self._entries or self._due:
                return False
            self.retired = True  # rawlink() now goes to a new hub
        with _hubs_lock:
            if _hubs.get(self.arena) is self:
                del _hubs[self.arena]
        self.lot.retire()
        return True


_hubs: dict[Arena, Hub] = {}
_hubs_lock = threading.Lock()


def hub_for(arena: Arena) -> Hub:
    """This process's hub for *arena*, started on first use."""
    hub = _hubs.get(arena)
    if hub is None or hub.retired:
        with _hubs_lock:
            hub = _hubs.get(arena)
            if hub is None or hub.retired:
                hub = _hubs[arena] = Hub(arena)
    return hub


def rawlink(arena: Arena, handle: Any, callback: Callback) -> None:
    """Link *callback* on this process's hub for *arena* (see the contract above)."""
    while not hub_for(arena).rawlink(handle, callback):
        pass  # it retired just now: the next hub_for() starts a new one


def existing_hub(arena: Arena) -> Hub | None:
    return _hubs.get(arena)


def _after_fork_in_child() -> None:
    global _hubs_lock
    # The parent's hub threads do not exist here; its links stay the
    # parent's.  Our own hub starts when we first link something.
    _hubs.clear()
    _hubs_lock = threading.Lock()


_lifecycle.on_fork("hubs", after_in_child=_after_fork_in_child)
