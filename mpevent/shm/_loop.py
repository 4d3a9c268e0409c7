"""Waiting in an event loop (asyncio, a gevent hub): a slot per loop and arena, and a socket.

A loop cannot sleep on a futex, and a Python thread between the futex and
the loop costs the GIL twice per wakeup.  So each loop that awaits records
of an arena has a :class:`LoopWaiters`: one waiter slot and an abstract
unix datagram socket bound to the slot's address, which a ``set()`` in
any process writes to directly (the loop reads it with asyncio's
``add_reader()`` or a gevent io watcher); and, for what a datagram cannot
do, an eventfd written by a C thread (``_native.Notifier``,
``src/native/notify.c``) that sleeps on the slot: the wakeups of setters
that cannot reach the socket (another network namespace), and the tick.
Each awaited record gets a link of that slot.

Contract of :func:`wait` (a coroutine, on the loop's thread) and of
:func:`wait_in_greenlet` (in a greenlet; only it blocks):

* A record set before or during the wait is seen, even if it was cleared
  again before the loop looked (its link fired).  :func:`wait` returns
  True then, False when *seconds* pass first; :func:`wait_in_greenlet`
  returns the positions seen set, in order ([] when *seconds* passed).
* Cancelling the awaiting task (or killing the greenlet) takes its links
  out of the records' queues before the exception propagates: nothing
  stays queued.
* A setter or claimer that died without waking anyone is found by the one
  rule in C (``record_moved``, ``claims.c``), which the process's one watch
  (``wait.c``) applies to every queued link of every parking lot once a
  second; it flags the loop's slot only if a record moved (the notifier
  then ticks the eventfd and the loop runs ``recheck``), so an idle loop
  with waiters is never woken.
* A loop with no waiters for a second gives its slot, eventfd and thread
  back, if it runs meanwhile (its reader does it); a loop or hub that is
  garbage-collected, closed or destroyed first does so when that is seen
  (the next loop's first wait, a fork).  A gevent hub that stops running
  (its last greenlet returned to the main one) keeps them until it runs
  again, or until this thread forks: idle ones are retired before a fork.
  A forked child starts with none (its parent's threads do not exist
  there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from .. import _cooperative, _lifecycle
from . import _linux
from ._arena import Arena
from ._native import NOTIFY_TICK, Notifier
from ._parking import ParkingLot

if TYPE_CHECKING:
    from .._linkable import Linkable
    from ._record import Record

IDLE: Final = 1.0  # seconds without a waiter before a loop's slot and thread go

# How a loop reads a descriptor: called with (fd, callback), it starts reading
# and returns the callable that stops.
StartReading = Callable[[int, Callable[[], None]], Callable[[], None]]


class LoopWaiters:
    """One loop's waiters on one arena: a slot, an eventfd, a notifier thread."""

    def __init__(self, arena: Arena, start_reading: StartReading) -> None:
        self.arena = arena
        self.native = arena.native
        # The loop is the driver of one parking lot: it sleeps in its
        # selector on the lot's slot (datagrams, the notifier's eventfd),
        # and a fired link resolves its waiter.  resolve() may be called
        # more than once and must not mind.
        self.lot: ParkingLot[Callable[[], None]] = ParkingLot(arena)
        self.slot = self.lot.slot
        self.fd = _linux.eventfd()
        self.notifier = Notifier(self.native, self.slot, self.fd, self.lot.watchlist)
        self.socket = self._bind()
        self.last_used = time.monotonic()
        self.closed = False
        self._stop_reading = [start_reading(self.fd, self.readable)]
        if self.socket is not None:
            self._stop_reading.append(start_reading(self.socket.fileno(), self.datagrams))
            self.native.set_loop(self.slot, self.token)  # setters write to it from now on

    def _bind(self) -> socket.socket | None:
        """The slot's datagram socket, or None if its address cannot be had."""
        self.token = secrets.randbits(32) or 1
        return _linux.datagram_receiver(self.native.loop_address(self.slot, self.token))

    @property
    def pending(self) -> dict[int, Any]:
        """The queued links (link -> what each waits for)."""
        return self.lot.pending

    def queue(self, index: int, resolve: Callable[[], None]) -> int | None:
        """Queue a link on record *index*; None if it is set already (nothing queued)."""
        return self.lot.queue(index, resolve)

    def leave(self, index: int, link: int) -> None:
        """Take a queued link out (whether it fired or not); once."""
        if self.lot.leave(link) is None:
            return  # retired meanwhile, which took it out
        self.last_used = time.monotonic()

    def datagrams(self) -> None:
        """The loop's reader of the socket: setters' wakeups, sent directly."""
        # One datagram per call: more make the socket readable again, and a
        # second recv() to learn there is none costs an exception (a third
        # of the reader's time here).
        try:  # noqa: SIM105 (contextlib.suppress's object costs a microsecond here)
            self.socket.recv(16)  # type: ignore[union-attr]
        except BlockingIOError:
            pass
        # Arm the word before looking (notify.c): a set() after this sends again.
        self.native.reset(self.slot)
        self._look(recheck=False)

    def readable(self) -> None:
        """The loop's reader of the eventfd: the notifier's wakeups and ticks."""
        count = 0
        with contextlib.suppress(BlockingIOError):  # another call read it already
            count = _linux.eventfd_read(self.fd)
        # A tick: the watch found a record moved with no wakeup (a dead
        # setter or claimer), by the one rule in C (claims.c); recheck() applies
        # it here, failing a lost claim.
        self._look(recheck=count >= NOTIFY_TICK)

    def _look(self, recheck: bool) -> None:
        """Resolve every waiter whose record was set; retire when idle long enough."""
        # Every wakeup's path: one C call looks at every link; the tick's
        # also applies the one rule for a wakeup that never came.
        for link in self.lot.moved() if recheck else self.lot.fired():
            resolve = self.lot.get(link)  # (a resolve() may have left it)
            if resolve is not None:
                resolve()
        if not self.pending and time.monotonic() - self.last_used >= IDLE:
            self.retire(on_the_loop=True)

    def retire(self, on_the_loop: bool) -> None:
        """Give the slot, links, eventfd and thread back (on the loop, or at its end)."""
        if self.closed:
            return
        self.closed = True
        _forget(self)
        if self.socket is not None:
            self.native.set_loop(self.slot, 0)  # setters back to the futex
        if on_the_loop:
            for stop in self._stop_reading:
                stop()
        self.notifier.close()
        os.close(self.fd)
        if self.socket is not None:
            self.socket.close()
        # The loop closed before a task's leave() ran: one still awaiting
        # (its link is queued: out it comes), or one set whose scheduled
        # leave() never ran (the setter dequeued it: bookkeeping only).
        self.lot.retire()


# loop or gevent hub -> {arena: its waiters}; weak, so a loop's end is seen.
_loops: weakref.WeakKeyDictionary[Any, dict[Arena, LoopWaiters]] = weakref.WeakKeyDictionary()


def _forget(waiters: LoopWaiters) -> None:
    for by_arena in list(_loops.values()):
        if by_arena.get(waiters.arena) is waiters:
            del by_arena[waiters.arena]


def _retire_all(by_arena: dict[Arena, LoopWaiters]) -> None:
    for waiters in list(by_arena.values()):
        waiters.retire(on_the_loop=False)


def _ended(loop: Any) -> bool:
    """A closed asyncio loop, or a destroyed gevent hub (its loop is gone)."""
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.is_closed()
    return getattr(loop, "loop", None) is None


def sweep() -> None:
    """Retire the waiters of loops that ended while something still refers to them."""
    for loop, by_arena in list(_loops.items()):
        if _ended(loop):
            _retire_all(by_arena)


def _waiters(loop: Any, arena: Arena, start_reading: StartReading) -> LoopWaiters:
    by_arena = _loops.get(loop)
    if by_arena is None:
        sweep()  # a new loop: the ended ones' threads go first
        by_arena = _loops[loop] = {}
        weakref.finalize(loop, _retire_all, by_arena)
    waiters = by_arena.get(arena)
    if waiters is None or waiters.closed:
        waiters = by_arena[arena] = LoopWaiters(arena, start_reading)
    return waiters


# --- asyncio -------------------------------------------------------------------


def _asyncio_reader(loop: asyncio.AbstractEventLoop) -> StartReading:
    def start(fd: int, callback: Callable[[], None]) -> Callable[[], None]:
        loop.add_reader(fd, callback)
        weak = weakref.ref(loop)  # the waiters must not keep their loop alive

        def stop() -> None:
            alive = weak()
            if alive is not None and not alive.is_closed():
                alive.remove_reader(fd)

        return stop

    return start


def _resolve(woken: asyncio.Future[bool], result: bool) -> None:
    if not woken.done():
        woken.set_result(result)


async def wait(arena: Arena, index: int, seconds: float | None) -> bool:
    """Await record *index* of *arena* on the running loop (see the contract above)."""
    loop = asyncio.get_running_loop()
    waiters = _waiters(loop, arena, _asyncio_reader(loop))
    # Resolved True by readable(), False by the timer: no wait_for(), whose
    # extra task or timeout context costs a loop iteration.
    woken: asyncio.Future[bool] = loop.create_future()
    link = waiters.queue(index, lambda: _resolve(woken, True))
    if link is None:
        return True
    timer = None if seconds is None else loop.call_later(seconds, _resolve, woken, False)
    try:
        woke = await woken
    except BaseException:  # cancelled: nothing stays queued when this propagates
        if timer is not None:
            timer.cancel()
        waiters.leave(index, link)
        raise
    if woke:
        # Set: the setter took the link out of the queue already, and what
        # is left is bookkeeping, done once the task has moved on (a woken
        # task resumes sooner by what it costs on a cold CPU, ~5 us here).
        loop.call_soon(_after_set, timer, waiters, index, link)
    else:
        waiters.leave(index, link)  # the timer fired: nothing to cancel
    return woke


def _after_set(
    timer: asyncio.TimerHandle | None, waiters: LoopWaiters, index: int, link: int
) -> None:
    if timer is not None:
        timer.cancel()
    waiters.leave(index, link)


# --- gevent --------------------------------------------------------------------


def _gevent_reader(hub: Any) -> StartReading:
    def start(fd: int, callback: Callable[[], None]) -> Callable[[], None]:
        watcher = hub.loop.io(fd, 1)  # 1: readable
        watcher.start(callback)

        def stop() -> None:
            watcher.stop()
            watcher.close()

        return stop

    return start


def wait_in_greenlet(linkables: Sequence[Linkable], seconds: float | None) -> list[int]:
    """Block only this greenlet until one of *linkables* is set (see the contract above)."""
    from gevent import get_hub

    hub = get_hub()

    def link(_: int, linkable: Linkable, on_set: Callable[[], None]) -> Callable[[], None] | None:
        record = cast("Record", linkable._record)
        waiters = _waiters(hub, record.arena, _gevent_reader(hub))
        link = waiters.queue(record.index, on_set)
        if link is None:
            return None
        return lambda: waiters.leave(record.index, link)

    return _cooperative.wait_linked(linkables, seconds, link, from_other_thread=False)


def descriptors() -> int:
    """How many descriptors the live loops of this process hold (for leak checks):
    an eventfd each, and a socket each that has one."""
    sweep()
    return sum(
        1 + (waiters.socket is not None)
        for by_arena in list(_loops.values())
        for waiters in list(by_arena.values())
    )


def _before_fork() -> None:
    sweep()
    # This thread's gevent hub, if any, is not running now: its idle
    # waiters can be retired from here (other threads' loops cannot).
    if "gevent" not in sys.modules:
        return
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()
    by_arena = _loops.get(hub) if hub is not None else None
    for waiters in list((by_arena or {}).values()):
        if not waiters.pending:
            waiters.retire(on_the_loop=True)


def _after_fork_in_child() -> None:
    # The parent's notifier threads do not exist here, and its loops are
    # the parent's: forget them without touching their slots.
    for by_arena in list(_loops.values()):
        for waiters in by_arena.values():
            waiters.closed = True
            waiters.notifier.close()  # forgets: the thread was the parent's
            # This process's copies of the descriptors (the parent keeps its own).
            os.close(waiters.fd)
            if waiters.socket is not None:
                waiters.socket.close()
        by_arena.clear()
    _loops.clear()


_lifecycle.on_fork("loops", before=_before_fork, after_in_child=_after_fork_in_child)
