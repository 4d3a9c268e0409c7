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

    def _run_fired(self) -> list[tuple[_Entry, list[Callback]]]:
        """The hot path of every wakeup: run the callbacks of the links a set() fired.

        Before any bookkeeping and without the hub's lock: on the CPU a
        wakeup lands on, every Python step costs many times its warm price,
        so the callbacks run first (one C call finds the fired links,
        ``fired_among``, which reads the lot's dict in one critical
        section).  Returns each entry with the callbacks that ran, for
        :meth:`_take_fired`.
        """
        ran = []
        for link in self.lot.fired():
            entry = self.lot.get(link)
            if entry is not None:
                callbacks = list(entry.callbacks)  # a snapshot: rawlink() may append
                for callback in callbacks:
                    _callbacks.run(callback, entry.handle)
                ran.append((entry, callbacks))
        return ran

    def _take_fired(
        self, ran: list[tuple[_Entry, list[Callback]]], recheck: bool
    ) -> tuple[list[_Entry], list[tuple[_Entry, list[Callback]]]]:
        """Take the fired entries out: (entries taken, callbacks still to run).

        *ran*: entries whose callbacks ran already (:meth:`_run_fired`); one
        unlinked meanwhile is not taken (its unlink() took its link out),
        and a callback linked to one after its snapshot still runs.  Then
        the entries set already when linked, and with *recheck* (a flag of
        the watch) those whose record moved by the one rule (claims.c).
        """
        with self._lock:
            due, self._due = self._due, []
            moved = [self.lot.get(link) for link in self.lot.moved()] if recheck else []
            taken: list[_Entry] = []
            to_run: list[tuple[_Entry, list[Callback]]] = []
            fresh: list[tuple[_Entry, list[Callback]]] = [
                (entry, []) for entry in due + moved if entry is not None
            ]
            for entry, done in fresh + ran:
                if self._entries.get(id(entry.handle)) is not entry:
                    continue  # unlinked or forgotten meanwhile, or taken already
                del self._entries[id(entry.handle)]
                taken.append(entry)
                rest = list(entry.callbacks)
                for callback in done:  # what ran already, once each
                    for i, other in enumerate(rest):
                        if other is callback:
                            del rest[i]
                            break
                if rest:
                    to_run.append((entry, rest))
            return taken, to_run

    def _give_back(self, taken: list[_Entry]) -> None:
        """Take the links of *taken* out of their queues, kept for the next rawlink()."""
        with self._lock:
            for entry in taken:
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
            ran = self._run_fired() if woken == 1 else []
            # Bookkeeping after the callbacks: they run sooner by what it
            # costs on the cold CPU a wakeup lands on (design.md).
            taken, to_run = self._take_fired(ran, recheck=woken != 1)
            for entry, callbacks in to_run:
                for callback in callbacks:
                    _callbacks.run(callback, entry.handle)
            self._give_back(taken)
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
