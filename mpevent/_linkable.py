"""What Event and AsyncResult share: a record, waiting, pickling and repr.

As in gevent's ``_abstract_linkable.py``, the public classes only add their
own state on top.  A linkable holds a :class:`~mpevent._record.Record`;
everything it does across processes goes through it and ``_parking``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import _parking
from ._record import Record, Reference


def _rebuild(cls: type[Linkable], reference: Reference) -> Linkable:
    linkable = cls.__new__(cls)
    linkable._record = Record.from_reference(reference, cls._KIND)
    linkable._init_local()
    return linkable


class Linkable:
    """Base of the shared objects: one record, waited on through the parking lot."""

    __slots__ = ("__weakref__", "_record")
    _KIND: ClassVar[int]

    def __init__(self) -> None:
        self._record = Record.allocate(self._KIND)
        self._init_local()

    def _init_local(self) -> None:
        """Set up this process's own state of a new or unpickled handle."""

    def ready(self) -> bool:
        """Return true if the record's flag is up (a plain shared-memory read)."""
        return self._record.native.is_set(self._record.index)

    def _wait_ready(self, timeout: object) -> bool:
        """Block until the flag is up (or was raised meanwhile) or *timeout* passes."""
        return _parking.park(self._record, _parking.check_timeout(timeout))

    def __reduce__(self) -> tuple[Any, ...]:
        # A reference, never a copy: the state stays in shared memory.
        return (_rebuild, (type(self), self._record.reference()))

    def _state_text(self) -> str:
        return "set" if self.ready() else "unset"

    def __repr__(self) -> str:
        package = type(self).__module__.split(".")[0]
        name = f"{package}.{type(self).__qualname__}"
        return f"<{name} at {id(self):#x}: {self._state_text()}>"
