"""Event and AsyncResult in shared memory: the public classes on a record of an arena.

These are the classes ``mpevent.Event()`` and ``mpevent.AsyncResult()``
make.  Each also derives from a C type of ``_native`` holding the arena
and the record's index, so the hot path -- ``is_set``, ``set``, ``clear``
and ``wait`` of an Event, ``ready`` and the wait in ``get()`` of an
AsyncResult -- is one C call that reads or writes the shared record
directly; everything else goes through the :class:`~._record.Record`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

from .. import asyncresult, event
from .._linkable import Linkable
from . import _names, _native
from ._record import Record, Reference

# Handle.wait answers in C only when there is nothing to decide; every
# other case takes the one wait path, the base class's.
_native.set_hooks(Linkable._wait_ready)


class _InSharedMemory(Linkable):
    """What both shared-memory classes add to the public ones (before the C base)."""

    __slots__ = ()
    if TYPE_CHECKING:
        _record: Record  # this backend's implementation of the interface

    def __init__(self, name: str | None = None, create: bool = False) -> None:
        """A new object, or with *name* a named one (see the public class)."""
        self._name = None if name is None else _names.check(name)
        if name is not None and not create:
            reference = _names.lookup(name)
            self._record = Record.from_reference(reference, self._KIND, adopt=False)
        else:
            self._record = Record.allocate(self._KIND)
            if name is not None:
                _names.publish(name, self._record)
        self._attach()

    @classmethod
    def _from_reference(cls, reference: Reference) -> Self:
        handle: Self = cls.__new__(cls)
        handle._record = Record.from_reference(reference, cls._KIND)
        handle._name = None
        handle._attach()
        return handle

    def _attach(self) -> None:
        self._bind(self._record.native, self._record.index)  # type: ignore[attr-defined]
        self._init_local()
        # Set by a class whose instances cannot be part of a reference cycle;
        # only the class that declares it: a subclass may add a __dict__.
        if type(self).__dict__.get("_ACYCLIC", False):
            _native.untrack(self)

    def _detach(self) -> None:
        self._unbind()  # type: ignore[attr-defined]

    def _forget_name(self, name: str) -> None:
        _names.remove(name, self._record)

    # Return true if the record's flag is up: a plain shared-memory read.
    ready = _native.Handle._is_set

    # Linkable._wait_ready, with the set-and-no-timeout case answered in C.
    _wait_ready = _native.Handle._wait


class Event(_InSharedMemory, _native.EventHandle, event.Event):
    """mpevent.Event in this machine's shared memory: what ``mpevent.Event()`` makes."""

    __slots__ = ("__weakref__", "_name", "_record")
    # Its slots hold a name and a Record, neither of which can refer back:
    # no cycle, so the garbage collector need not track a million Events.
    _ACYCLIC = True

    # is_set(), set(), clear() and wait() are EventHandle's: one C call each.
    isSet = _native.EventHandle.is_set


class AsyncResult(_InSharedMemory, _native.Handle, asyncresult.AsyncResult):
    """mpevent.AsyncResult in shared memory: what ``mpevent.AsyncResult()`` makes."""

    __slots__ = ("__weakref__", "_cache", "_name", "_record")
