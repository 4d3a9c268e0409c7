"""What Event and AsyncResult share, on any backend: a record, waiting, pickling, repr.

As in gevent's ``_abstract_linkable.py``, the public classes only add their
own state on top.  A linkable holds a record (a :class:`mpevent._interface.
RecordBackend`); everything it does across processes goes through the
record's methods, so this module knows no backend.  A backend's classes
(``mpevent.shm``, ``mpevent.redis``) subclass the public ones, declare the
slots and say how a handle is made, rebuilt from a pickle and unnamed; the
shared-memory ones also bind the hot path to C methods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._interface import RecordBackend

from . import _checks, _cooperative


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_async_by_link(handle: Linkable, seconds: float | None) -> bool:
    """A backend's wait_async() through rawlink(): its callback thread wakes the
    loop (``call_soon_threadsafe``).  True once set, False at *seconds*."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def on_set(_: object) -> None:
        # A closed loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, woken)

    handle.rawlink(on_set)
    try:
        await asyncio.wait_for(woken, seconds)
    except asyncio.TimeoutError:
        return False
    finally:
        handle.unlink(on_set)
    return True


def _rebuild(cls: type[Linkable], reference: Any) -> Linkable:
    return cls._from_reference(reference)


def block_until_any(linkables: Sequence[Linkable], seconds: float | None) -> list[int]:
    """Where every blocking call blocks: positions of *linkables* seen set, in order.

    *seconds* is a checked timeout (``_checks.check_timeout``: None or a
    float); an empty list means it passed.  Under gevent only the calling
    greenlet sleeps (``_cooperative``); otherwise the thread parks through
    the records' backend, one record's ``wait()`` or ``wait_many()`` for
    several.  ``mpevent.wait()`` and ``iwait()`` come here too.
    """
    if _cooperative.in_greenlet():
        by_greenlet: list[int] = type(linkables[0]._record).wait_in_greenlet(linkables, seconds)
        return by_greenlet
    if len(linkables) == 1:
        return [0] if linkables[0]._record.wait(seconds) else []
    records = [linkable._record for linkable in linkables]
    positions: list[int] = type(records[0]).wait_many(records, seconds)
    return positions


class _Closed:
    """Stands in for the record of a closed handle: any use is an error."""

    __slots__ = ("_description",)

    def __init__(self, description: str) -> None:
        self._description = description

    def __getattr__(self, attribute: str) -> Any:
        raise ValueError(f"operation on a closed {self._description} handle")


class Linkable:
    """Base of the shared objects: one record, waited on through its backend."""

    # The slots are declared by each backend's classes: the shared-memory
    # ones also derive from a C type with its own layout, and two bases
    # that both add slots cannot be combined.  The type checker is told
    # which slots every backend's class has.
    if TYPE_CHECKING:
        __slots__ = ("__weakref__", "_cache", "_name", "_record")
    else:
        __slots__ = ()
    _KIND: ClassVar[int]
    _PUBLIC: ClassVar[str]  # the public class's name: "Event" or "AsyncResult"
    _record: RecordBackend  # or a _Closed stand-in, which raises on any use
    _name: str | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._from_reference.__func__ is Linkable._from_reference.__func__:  # type: ignore[attr-defined]
            raise TypeError(
                f"{cls.__qualname__} derives from mpevent.{cls._PUBLIC} but not from a "
                f"backend's class: derive from mpevent.shm.{cls._PUBLIC} instead"
            )
        return super().__new__(cls)

    @classmethod
    def _from_reference(cls, reference: Any) -> Self:
        """A new handle on the object *reference* (from a pickle) denotes."""
        raise NotImplementedError

    def _detach(self) -> None:
        """Let go of what this handle holds beside its record (see close())."""

    def _forget_name(self, name: str) -> None:
        """Remove *name* from wherever the backend keeps names."""
        raise NotImplementedError

    @classmethod
    def open(cls, name: str) -> Self:
        """Open the object called *name*, from any process that can reach it.

        Raises FileNotFoundError if there is none, TypeError if it is an
        object of the other kind.
        """
        return cls(_checks.check_opened(name))

    @property
    def name(self) -> str | None:
        """The name this handle was created or opened with, or None."""
        return self._name

    def remove_name(self) -> None:
        """Remove this object's name; the object lives on while handles remain."""
        if self._name is None:
            raise ValueError("this handle was not created or opened by name")
        self._forget_name(self._name)
        self._name = None

    def close(self) -> None:
        """Drop this handle's reference now; using the handle later raises ValueError."""
        record = self._record
        if not isinstance(record, _Closed):
            record.unlink_all(self)  # its callbacks could never run any more
            self._detach()
            # Typed as the interface: any later use raises ValueError at run time.
            self._record = cast("RecordBackend", _Closed(f"mpevent.{self._PUBLIC}"))
            record.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _init_local(self) -> None:
        """Set up this process's own state of a new or unpickled handle."""

    def ready(self) -> bool:
        """Return true if and only if the object is set."""
        return bool(self._record.is_set())

    def _wait_ready(self, timeout: object = None) -> bool:
        """Block until the object is set or *timeout* passes; return whether it is.

        The one wait path of ``Event.wait``, ``AsyncResult.get`` and
        ``wait``, on every backend (the shared-memory classes answer only
        "set already, no timeout" in C first).  Inside a gevent program only
        the calling greenlet blocks.
        """
        seconds = _checks.check_timeout(timeout)
        if seconds is not None and seconds <= 0:
            return self.ready()
        return bool(block_until_any([self], seconds))

    async def _wait_ready_async(self, timeout: object) -> bool:
        """Like _wait_ready(), without blocking the running event loop.

        The backend wakes the loop (``RecordBackend.wait_async``): no thread
        per waiter.  Cancelling the awaiting task unlinks the waiter.
        """
        seconds = _checks.check_timeout(timeout)
        if self.ready():
            return True
        if seconds is not None and seconds <= 0:
            return False
        if not await self._record.wait_async(self, seconds):
            return self.ready()
        # Woken: set, or (Redis) vanished, whose state read raises the
        # LookupError that says why.  A set then cleared at once still
        # counts as set, as for a blocking wait.
        self.ready()
        return True

    def rawlink(self, callback: Callable[[Any], object]) -> None:
        """Register *callback* to be called with this object once it is set.

        It runs once, in this process, on the backend's callback thread,
        whichever process sets the object; at once (on that thread) if the
        object is set already.  Raises TypeError if *callback* is not callable.
        """
        if not callable(callback):
            raise TypeError(f"rawlink() needs a callable, not {type(callback).__qualname__!r}")
        self._record.rawlink(self, callback)

    def unlink(self, callback: Callable[[Any], object]) -> None:
        """Remove a callback registered by rawlink(); unknown callbacks are ignored."""
        self._record.unlink(self, callback)

    def __reduce__(self) -> tuple[Any, ...]:
        # A reference, never a copy: the state stays where the backend keeps it.
        return (_rebuild, (type(self), self._record.reference()))

    def _state_text(self) -> str:
        return "set" if self.ready() else "unset"

    def _where(self) -> str:
        """Where the object lives, for repr: nothing for this machine's shared memory."""
        return ""

    def _describe_state(self) -> str:
        if isinstance(self._record, _Closed):
            return "closed"
        return self._state_text()

    def __repr__(self) -> str:
        where = "" if isinstance(self._record, _Closed) else self._where()
        return f"<mpevent.{self._PUBLIC} at {id(self):#x}: {where}{self._describe_state()}>"
