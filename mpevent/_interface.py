"""The interface between the public layer and the backends: RecordBackend, and its words.

The public classes (``event.py``, ``asyncresult.py``, ``_linkable.py``),
``_select`` and the asyncio and gevent waiting call their record only
through :class:`RecordBackend`; each backend's record implements it, and
mypy ``--strict`` proves it (an assignment to ``type[RecordBackend]`` at
the end of ``shm/_record.py`` and ``redis/_record.py``).  This module holds
the Protocol and the slot numbers it speaks of, nothing else.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

# The value slots of a record: what set() and set_exception() fill.
VALUE: Final = 0
EXCEPTION: Final = 1
EITHER: Final = -1  # for load(): the value if one is stored, else the exception


class RecordBackend(Protocol):
    """One shared object's state, wherever it lives.

    Every method is thread-safe and may be called from any process that
    holds a reference; a record of a closed handle is never called.
    """

    def is_set(self) -> bool:
        """The flag (an AsyncResult's: something is stored)."""
        ...

    def set(self) -> None:
        """Raise the flag, bump the generation and wake every waiter; never blocks on them."""
        ...

    def clear(self) -> None:
        """Lower the flag."""
        ...

    def wait(self, timeout: float | None) -> bool:
        """Block until set or *timeout* (seconds, None: forever) passes.

        True if the flag is up, or was raised while this call waited (even
        if lowered again at once): no waiter misses a set().
        """
        ...

    @staticmethod
    def wait_many(records: Sequence[Any], timeout: float | None, count: int) -> list[int]:
        """wait() on several records of this backend: the positions of the first *count* set."""
        ...

    def holds(self, which: int) -> bool:
        """True if value slot *which* (VALUE or EXCEPTION) is filled."""
        ...

    def store(self, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
        """Store a pickle (and its out-of-band buffers) in slot *which* and set().

        All or nothing: on MemoryError, a full server or a lost
        connection the record is left as it was.
        """
        ...

    def load(self, which: int, copy: bool = False, known: int = -1) -> tuple[int, int, object]:
        """What slot *which* (or EITHER) holds now: (generation, slot, object).

        *slot* is the slot read, -1 if it (or, for EITHER, both) is empty.
        If the generation equals *known* the object is not read (None): the
        caller has it already.  Large buffers may be read-only views unless
        *copy*.  One round trip on a server.
        """
        ...

    def rawlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        """Call ``callback(handle)`` once, on this process's callback thread, once set."""
        ...

    def claim(self) -> None:
        """Promise that this process sets the record (an AsyncResult's).

        If the process ends without setting it, the record is set holding
        :class:`~mpevent.ProcessDied` in its EXCEPTION slot, and every waiter
        wakes within about a second.  ValueError if it is set already or
        claimed by a live process; NotImplementedError where the backend
        cannot tell that a process died.
        """
        ...

    def unlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        """Forget a rawlink() of *handle*; unknown callbacks are ignored."""
        ...

    def unlink_all(self, handle: Any) -> None:
        """Forget every rawlink() of *handle* (it is being closed)."""
        ...

    def reference(self) -> Any:
        """A picklable description another process rebuilds a handle from."""
        ...

    def release(self) -> None:
        """Give back this handle's reference (close())."""
        ...

    def info(self) -> dict[str, int]:
        """Counters for ``python -m mpevent list`` and tests."""
        ...
