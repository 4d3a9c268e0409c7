"""Event: a flag that any process can set, clear and wait for."""

from __future__ import annotations

from typing import Final

from ._linkable import Linkable

KIND_EVENT: Final = 1


class Event(Linkable):
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

    def is_set(self) -> bool:
        """Return true if and only if the flag is set."""
        return self._record.is_set()

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every waiter, in every process.

        Never blocks on the waiters: it writes their wake-up words and
        returns.
        """
        self._record.set()

    def clear(self) -> None:
        """Reset the flag; later wait() calls block until the next set()."""
        self._record.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or *timeout* seconds pass; return the flag.

        Returns True at once if the flag is set.  A waiter that was blocked
        when set() ran returns True even if clear() followed at once.
        *timeout* None waits forever; zero or negative does not wait.
        Raises TypeError for a non-number timeout, ValueError for NaN.
        """
        return self._wait_ready(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Await the flag without blocking the event loop; same result as wait()."""
        return await self._wait_ready_async(timeout)
