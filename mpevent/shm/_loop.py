"""Waiting in an asyncio event loop: one waiter slot per loop and arena, woken through an eventfd.

A loop cannot sleep on a futex, and a Python thread between the futex and
the loop costs the GIL twice per wakeup.  So each loop that awaits records
of an arena has a :class:`LoopWaiters`: one waiter slot, an eventfd the
loop reads with ``add_reader()``, and a C thread (``_native.Notifier``,
``src/native/notify.c``) that sleeps on the slot and writes the eventfd,
without the GIL.  Each awaited record gets a link of that slot.

Contract of :func:`wait` (a coroutine, run on the loop's thread):

* It returns True once the record is set (or was set and cleared again
  during the wait), False when *seconds* pass first.
* Cancelling the awaiting task takes its link out of the record's queue
  before the CancelledError propagates: nothing stays queued.
* A setter or claimer that died without waking anyone is found by the one
  rule in C (``recheck``, ``wait.c``), applied at the notifier's tick, once
  a second while the loop has waiters.
* A loop with no waiters for a second gives its slot, eventfd and thread
  back; a loop that is garbage-collected first does so then.  A forked
  child starts with none (its parent's threads do not exist there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from typing import Final

from .. import _lifecycle
from . import _native
from ._arena import Arena

RECHECK: Final = _native.RECHECK_MS / 1000  # the notifier's tick; the recheck rule's period
IDLE: Final = 1.0  # seconds without a waiter before a loop's slot and thread go


def _expire(woken: asyncio.Future[bool]) -> None:
    if not woken.done():
        woken.set_result(False)


class LoopWaiters:
    """One loop's waiters on one arena: a slot, an eventfd, a notifier thread."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.native = arena.native
        self.slot = arena.allocate_slot()
        self.native.reset(self.slot)
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.notifier = _native.Notifier(self.native, self.slot, self.fd)
        # link -> (future, record index, generation when queued)
        self.pending: dict[int, tuple[asyncio.Future[bool], int, int]] = {}
        self.spare_links: list[int] = []
        self.last_recheck = self.last_used = time.monotonic()
        self.closed = False

    async def wait(self, index: int, seconds: float | None) -> bool:
        loop = asyncio.get_running_loop()
        link = self.spare_links.pop() if self.spare_links else self.native.link_alloc(self.slot)
        state = self.native.enqueue(index, link, self.slot)
        if state & 1:  # set already: nothing was queued
            self.spare_links.append(link)
            return True
        # Resolved True by readable(), False by the timer: no wait_for(),
        # whose extra task or timeout context costs a loop iteration.
        woken: asyncio.Future[bool] = loop.create_future()
        timer = None if seconds is None else loop.call_later(seconds, _expire, woken)
        self.pending[link] = (woken, index, state >> 1)
        try:
            return await woken
        finally:
            if timer is not None:
                timer.cancel()
            del self.pending[link]
            self.native.dequeue(index, link)
            self.spare_links.append(link)
            self.last_used = time.monotonic()

    def readable(self) -> None:
        """The loop's reader of the eventfd: resolve every waiter whose record was set."""
        with contextlib.suppress(BlockingIOError):  # another tick read it already
            os.eventfd_read(self.fd)
        now = time.monotonic()
        recheck = now - self.last_recheck >= RECHECK
        if recheck:
            self.last_recheck = now
        for link, (woken, index, generation) in list(self.pending.items()):
            if woken.done():
                continue
            # A wakeup that never came (a dead setter or claimer): the one
            # rule, in C (wait.c).
            if self.native.fired(link) or (recheck and self.native.recheck(index, generation)):
                woken.set_result(True)
        if not self.pending and now - self.last_used >= IDLE:
            self.retire(asyncio.get_running_loop())

    def retire(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Give the slot, links, eventfd and thread back (on the loop, or at its end)."""
        if self.closed:
            return
        self.closed = True
        _forget(self)
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.fd)
        self.notifier.close()
        os.close(self.fd)
        for link in self.spare_links:
            self.native.link_free(link)
        self.native.slot_free(self.slot)


# loop -> {arena: its waiters}; weak, so a loop's end is seen.
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Arena, LoopWaiters]] = (
    weakref.WeakKeyDictionary()
)


def _forget(waiters: LoopWaiters) -> None:
    for by_arena in list(_loops.values()):
        if by_arena.get(waiters.arena) is waiters:
            del by_arena[waiters.arena]


def _retire_all(by_arena: dict[Arena, LoopWaiters]) -> None:
    for waiters in list(by_arena.values()):
        waiters.retire(None)


async def wait(arena: Arena, index: int, seconds: float | None) -> bool:
    """Await record *index* of *arena* on the running loop (see the contract above)."""
    loop = asyncio.get_running_loop()
    by_arena = _loops.get(loop)
    if by_arena is None:
        by_arena = _loops[loop] = {}
        weakref.finalize(loop, _retire_all, by_arena)
    waiters = by_arena.get(arena)
    if waiters is None or waiters.closed:
        waiters = by_arena[arena] = LoopWaiters(arena)
        loop.add_reader(waiters.fd, waiters.readable)
    return await waiters.wait(index, seconds)


def _after_fork_in_child() -> None:
    # The parent's notifier threads do not exist here, and its loops are
    # the parent's: forget them without touching their slots.
    for by_arena in list(_loops.values()):
        for waiters in by_arena.values():
            waiters.closed = True
            waiters.notifier.close()  # forgets: the thread was the parent's
        by_arena.clear()
    _loops.clear()


_lifecycle.on_fork("loops", after_in_child=_after_fork_in_child)
