"""Event and AsyncResult on a Redis server: the public classes, their state there.

RedisEvent and RedisAsyncResult *are* mpevent.Event and mpevent.AsyncResult
(subclasses): every semantic rule of AsyncResult is inherited as it is.
What changes is where the state lives, so the shared-memory hot path
(C methods bound to an arena) is replaced by calls to a RedisRecord.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

from .. import _checks, _cooperative
from ..asyncresult import AsyncResult
from ..event import Event
from . import _registry
from ._record import RedisRecord, RedisReference

if TYPE_CHECKING:
    from ._backend import RedisBackend


def _rebuild(cls: type[_RedisLinkable], reference: RedisReference) -> _RedisLinkable:
    obj = cls.__new__(cls)
    backend = _registry.backend_for(reference.url)
    obj._attach(RedisRecord(backend, reference.name, reference.kind), None)
    return obj


class _RedisLinkable:
    """What both Redis classes change in their shared-memory base."""

    _KIND: int
    _record: Any
    _name: str | None

    def _setup(self, backend: RedisBackend, name: str | None, create: bool) -> None:
        checked = None if name is None else _checks.check_name(name)
        record = RedisRecord(backend, checked or f"anonymous-{uuid.uuid4().hex}", self._KIND)
        if checked is None or create:
            if not record.create():
                raise FileExistsError(
                    f"an mpevent object called {checked!r} already exists on "
                    f"{backend.settings.public}"
                )
        else:
            try:
                state = record.state()
            except LookupError:
                raise FileNotFoundError(
                    f"no mpevent object called {checked!r} on {backend.settings.public}"
                ) from None
            if state.kind != self._KIND:
                raise TypeError(f"{checked!r} is an object of another kind ({state.kind})")
        self._attach(record, checked)

    def _attach(self, record: RedisRecord, name: str | None) -> None:
        self._record = record
        self._name = name
        self._init_local()  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, ...]:
        # (URL without the password, name): the receiver brings its own credentials.
        return (_rebuild, (type(self), self._record.reference()))

    def remove_name(self) -> None:
        """Delete the object from the server (in Redis the name *is* the object)."""
        if self._name is None:
            raise ValueError("this handle was not created or opened by name")
        self._record.backend.delete(self._record)
        self._name = None

    def ready(self) -> bool:
        """Return true if and only if the object is set (one round trip)."""
        return bool(self._record.is_set())

    def _wait_ready(self, timeout: object = None) -> bool:
        seconds = _checks.check_timeout(timeout)
        if seconds is not None and seconds <= 0:
            return bool(self._record.is_set())
        if "gevent" in sys.modules and _cooperative.in_greenlet():
            return _cooperative.wait_ready(self, seconds)  # type: ignore[arg-type]
        return bool(self._record.wait(seconds))


class RedisEvent(_RedisLinkable, Event):
    """mpevent.Event whose flag lives on a Redis server (see mpevent.connect)."""

    __slots__ = ()

    def __init__(self, backend: RedisBackend, name: str | None = None, create: bool = False):
        self._setup(backend, name, create)

    def is_set(self) -> bool:
        """Return true if and only if the flag is set (one round trip)."""
        return bool(self._record.is_set())

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every waiter on every host (one round trip)."""
        self._record.set()

    def clear(self) -> None:
        """Reset the flag."""
        self._record.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or *timeout* seconds pass; return the flag."""
        return self._wait_ready(timeout)


class RedisAsyncResult(_RedisLinkable, AsyncResult):
    """mpevent.AsyncResult whose value lives on a Redis server (see mpevent.connect)."""

    __slots__ = ()

    def __init__(self, backend: RedisBackend, name: str | None = None, create: bool = False):
        self._setup(backend, name, create)
