"""Event: a flag that any process can set, clear and wait for."""

from __future__ import annotations

from typing import Any, Final

from . import _base
from ._linkable import Linkable

KIND_EVENT: Final = 1


class Event(Linkable):
    """A flag shared by processes, with the :class:`threading.Event` API.

    ``set()`` wakes every thread of every process blocked in ``wait()``.
    ``mpevent.Event()`` lives in this machine's shared memory, where
    ``is_set()`` reads memory without a lock or a system call;
    ``mpevent.connect(url).Event()`` makes one on a Redis server, also an
    instance of this class.  An Event can be inherited by a forked child,
    passed to :class:`multiprocessing.Process`, or pickled into a ``Pool``
    / ``ProcessPoolExecutor`` task: a pickle is a small reference to the
    same flag, never a copy.

    ``Event(name, create=True)`` creates it under *name*
    (FileExistsError if taken); ``Event(name)`` opens the existing one
    (FileNotFoundError if there is none), as
    :class:`multiprocessing.shared_memory.SharedMemory` does.
    """

    __slots__ = ()
    _KIND = KIND_EVENT
    _PUBLIC = "Event"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Event:
            # mpevent.Event() itself: the default backend's class (shared
            # memory), as pathlib.Path() makes a PosixPath.
            implementation = _base.default().Event
            return implementation.__new__(implementation)
        return super().__new__(cls)

    def is_set(self) -> bool:
        """Return true if and only if the flag is set."""
        return bool(self._record.is_set())

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every thread of every process waiting for it."""
        self._record.set()

    def clear(self) -> None:
        """Reset the flag; wait() blocks again until the next set()."""
        self._record.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or *timeout* seconds pass; return the flag.

        A waiter that was blocked when set() ran returns True even if
        clear() follows at once.  Raises TypeError or ValueError for a bad
        timeout.
        """
        return self._wait_ready(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Await the flag without blocking the event loop; same result as wait()."""
        return await self._wait_ready_async(timeout)
