"""What Event and AsyncResult share: a record, waiting, pickling and repr.

As in gevent's ``_abstract_linkable.py``, the public classes only add their
own state on top.  A linkable holds a :class:`~mpevent._record.Record`;
everything it does across processes goes through the Record's methods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing_extensions import Self

from . import _checks, _cooperative
from .shm import _names, _native, _parking
from .shm._record import Record, Reference


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rebuild(cls: type[Linkable], reference: Reference) -> Linkable:
    linkable = cls.__new__(cls)
    linkable._record = Record.from_reference(reference, cls._KIND)
    linkable._bind(linkable._record.native, linkable._record.index)
    linkable._name = None
    linkable._init_local()
    linkable._untrack_if_acyclic()
    return linkable


def _cooperative_wait(linkable: Linkable, seconds: float | None) -> object:
    """Handle._wait's way out for gevent programs: NotImplemented outside a greenlet."""
    if _cooperative.in_greenlet():
        return _cooperative.wait_ready(linkable, seconds)
    return NotImplemented


# What the C fast path (_native.Handle) asks of Python: this thread's waiter
# slot, gevent's way of waiting, and the rules for unusual timeout types.
_native.set_hooks(_parking.slot_for_native, _cooperative_wait, _checks.check_timeout)


class _Closed:
    """Stands in for the record of a closed handle: any use is an error."""

    __slots__ = ("_description",)

    def __init__(self, description: str) -> None:
        self._description = description

    def __getattr__(self, attribute: str) -> Any:
        raise ValueError(f"operation on a closed {self._description} handle")


class Linkable(_native.Handle):
    """Base of the shared objects: one record, waited on through the parking lot.

    The hot path (is_set, set, clear, wait) is :class:`mpevent.shm._native.Handle`'s,
    in C; a subclass binds those methods under its public names.
    """

    __slots__ = ("__weakref__", "_name", "_record")
    _KIND: ClassVar[int]

    def __init__(self, name: str | None = None, create: bool = False) -> None:
        """A new object, or with *name* a named one (see :meth:`open`).

        With *name* and *create* true, create it under that name
        (FileExistsError if taken); with *name* only, open the existing
        object (FileNotFoundError if there is none), as
        :class:`multiprocessing.shared_memory.SharedMemory` does.
        """
        self._name = None if name is None else _names.check(name)
        if name is not None and not create:
            reference = _names.lookup(name)
            self._record = Record.from_reference(reference, self._KIND, adopt=False)
        else:
            self._record = Record.allocate(self._KIND)
            if name is not None:
                _names.publish(name, self._record)
        self._bind(self._record.native, self._record.index)
        self._init_local()
        self._untrack_if_acyclic()

    @classmethod
    def open(cls, name: str) -> Self:
        """Open the object called *name*, from any process of this user."""
        return cls(name)

    @property
    def name(self) -> str | None:
        """The name this handle was created or opened with, or None."""
        return self._name

    def remove_name(self) -> None:
        """Remove this object's name; the object lives on while handles remain."""
        if self._name is None:
            raise ValueError("this handle was not created or opened by name")
        _names.remove(self._name, self._record)
        self._name = None

    def close(self) -> None:
        """Drop this handle's reference now; using the handle later raises ValueError."""
        record = self._record
        if not isinstance(record, _Closed):
            record.unlink_all(self)  # its callbacks could never run any more
            self._unbind()
            self._record = _Closed(f"mpevent.{type(self).__qualname__}")  # type: ignore[assignment]
            record.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _init_local(self) -> None:
        """Set up this process's own state of a new or unpickled handle."""

    # Set by a class whose instances cannot be part of a reference cycle.
    _ACYCLIC: ClassVar[bool] = False

    def _untrack_if_acyclic(self) -> None:
        # Only the class that declares it: a subclass may add a __dict__.
        if type(self).__dict__.get("_ACYCLIC", False):
            _native.untrack(self)

    # Return true if the record's flag is up: a plain shared-memory read.
    ready = _native.Handle._is_set

    # Block until the flag is up (or was raised meanwhile) or *timeout*
    # passes.  Inside a gevent program only the calling greenlet blocks.
    _wait_ready = _native.Handle._wait

    async def _wait_ready_async(self, timeout: object) -> bool:
        """Like _wait_ready(), without blocking the running event loop.

        The hub thread wakes the loop (``call_soon_threadsafe``): no thread
        per waiter.  Cancelling the awaiting task unlinks the waiter.
        """
        seconds = _checks.check_timeout(timeout)
        if self.ready():
            return True
        if seconds is not None and seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def on_set(_: object) -> None:
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, woken)

        self.rawlink(on_set)
        try:
            await asyncio.wait_for(woken, seconds)
        except asyncio.TimeoutError:
            return self.ready()
        finally:
            self.unlink(on_set)
        return True

    def rawlink(self, callback: Callable[[Any], object]) -> None:
        """Register *callback* to be called with this object once it is set.

        It runs once, in this process, on the hub thread, whichever process
        sets the object; at once (on the hub) if the object is set already.
        Raises TypeError if *callback* is not callable.
        """
        if not callable(callback):
            raise TypeError(f"rawlink() needs a callable, not {type(callback).__qualname__!r}")
        self._record.rawlink(self, callback)

    def unlink(self, callback: Callable[[Any], object]) -> None:
        """Remove a callback registered by rawlink(); unknown callbacks are ignored."""
        self._record.unlink(self, callback)

    def __reduce__(self) -> tuple[Any, ...]:
        # A reference, never a copy: the state stays in shared memory.
        return (_rebuild, (type(self), self._record.reference()))

    def _state_text(self) -> str:
        return "set" if self.ready() else "unset"

    def _describe_state(self) -> str:
        if isinstance(self._record, _Closed):
            return "closed"
        return self._state_text()

    def __repr__(self) -> str:
        package = type(self).__module__.split(".")[0]
        name = f"{package}.{type(self).__qualname__}"
        return f"<{name} at {id(self):#x}: {self._describe_state()}>"
