"""The interface between the public layer and the backends: two Protocols, and their words.

The public classes (``event.py``, ``asyncresult.py``, ``_linkable.py``),
``_select`` and the asyncio and gevent waiting call their record only
through :class:`RecordBackend`; the CLI, the doctor and ``connect()``
reach a backend only through :class:`Backend`.  Each backend implements
both, and mypy ``--strict`` proves it (assignments to ``type[...]`` of
these Protocols at the end of ``shm/_record.py``, ``shm/_backend.py``,
``redis/_record.py`` and ``redis/_backend.py``).  This module holds the
Protocols and the words they speak of, nothing else.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._linkable import Linkable

L = TypeVar("L", bound="Linkable")

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
    def wait_many(records: Sequence[Any], timeout: float | None) -> list[int]:
        """wait() on several records of this backend: the positions seen set, in order.

        Returns once any is set ([] when *timeout* passed first).
        """
        ...

    @staticmethod
    def wait_in_greenlet(linkables: Sequence[Any], timeout: float | None) -> list[int]:
        """wait_many() for a greenlet: only it blocks (the gevent hub runs the rest).

        *linkables* are the handles of this backend's records; returns the
        positions seen set, in order, [] when *timeout* passed.
        """
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

    def load(
        self, which: int, copy: bool = False, known: int = -1, woken: bool = False
    ) -> tuple[int, int, object]:
        """What slot *which* (or EITHER) holds now: (generation, slot, object).

        *slot* is the slot read, -1 if it (or, for EITHER, both) is empty.
        If the generation equals *known* the object is not read (None): the
        caller has it already.  Large buffers may be read-only views unless
        *copy*.  One round trip on a server.  *woken*: this thread's wait on
        the record has just returned True; the backend may answer from what
        woke it (a value carried by the set's message), which was the
        record's content at a moment of the wait.
        """
        ...

    def rawlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        """Call ``callback(handle)`` once, on this process's callback thread, once set."""
        ...

    async def wait_async(self, handle: Any, timeout: float | None) -> bool:
        """Await the record on the running event loop: True once set, False at *timeout*.

        *timeout* is checked (None or a positive float).  Cancelling the
        awaiting task leaves nothing queued.
        """
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


class CleanReport(NamedTuple):
    """What ``Backend.clean()`` removed (or, dry, would remove), and a word on the rest."""

    removed: list[str]
    note: str = ""


class Backend(Protocol):
    """Where objects live: its classes, waiting on them, and looking after them.

    ``Event`` and ``AsyncResult`` make or open this backend's objects
    (``backend.Event(name, create=True)``, ``backend.Event.open(name)``).
    """

    Event: Any  # a class, or a factory of one: they live above this layer
    AsyncResult: Any

    def wait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> list[L]:
        """mpevent.wait() for this backend's objects."""
        ...

    def iwait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> Iterator[L]:
        """mpevent.iwait() for this backend's objects."""
        ...

    def names(self) -> list[str]:
        """The names of this backend's named objects, sorted."""
        ...

    def open(self, name: str) -> Any:
        """The object called *name*, Event or AsyncResult, whichever it is.

        FileNotFoundError (a LookupError on Redis) if there is none.
        """
        ...

    def summary(self) -> list[str]:
        """Lines for ``python -m mpevent list``: where the objects live, and their state."""
        ...

    def clean(self, dry_run: bool = False) -> CleanReport:
        """Remove what killed processes left behind; with *dry_run* only say what."""
        ...

    def close(self) -> None:
        """Let go of the backend's connections."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...
