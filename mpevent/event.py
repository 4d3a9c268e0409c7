"""Event: a flag that any process can set, clear and wait for."""

from __future__ import annotations

from typing import Final

from ._linkable import Linkable
from .shm._native import EventHandle

KIND_EVENT: Final = 1


class Event(Linkable, EventHandle):
    """A flag shared by processes, with the :class:`threading.Event` API.

    ``set()`` wakes every thread of every process blocked in ``wait()``;
    ``is_set()`` reads shared memory without a lock or a system call.  An
    Event can be inherited by a forked child, passed to
    :class:`multiprocessing.Process`, or pickled into a ``Pool`` /
    ``ProcessPoolExecutor`` task: a pickle is a small reference to the same
    flag, never a copy.
    """

    __slots__ = ()
    _KIND = KIND_EVENT
    # Its slots hold a name and a Record, neither of which can refer back:
    # no cycle, so the garbage collector need not track a million Events.
    _ACYCLIC = True

    # is_set(), set(), clear() and wait() are EventHandle's: one C call each.
    isSet = EventHandle.is_set

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Await the flag without blocking the event loop; same result as wait()."""
        return await self._wait_ready_async(timeout)
