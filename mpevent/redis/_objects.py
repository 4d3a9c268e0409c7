"""Event and AsyncResult on a Redis server: the public classes, their state there.

RedisEvent and RedisAsyncResult *are* mpevent.Event and mpevent.AsyncResult
(subclasses): every semantic rule is inherited as it is.  What they add is
where the state lives: a RedisRecord, and how a handle is made, rebuilt
from a pickle and deleted.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from .. import _checks
from .._linkable import Linkable
from ..asyncresult import AsyncResult
from ..event import Event
from . import _registry
from ._record import RedisRecord, RedisReference

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._backend import RedisBackend


class _OnRedis(Linkable):
    """What both Redis classes add to the public ones."""

    __slots__ = ()
    if TYPE_CHECKING:
        _record: RedisRecord  # this backend's implementation of the interface

    def __init__(self, backend: RedisBackend, name: str | None = None, create: bool = False):
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

    @classmethod
    def _from_reference(cls, reference: RedisReference) -> Self:
        # (URL without the password, name): this process brings its own credentials.
        handle: Self = cls.__new__(cls)
        backend = _registry.backend_for(reference.url)
        handle._attach(RedisRecord(backend, reference.name, reference.kind), None)
        return handle

    def _attach(self, record: RedisRecord, name: str | None) -> None:
        self._record = record
        self._name = name
        self._init_local()

    def _forget_name(self, name: str) -> None:
        # In Redis the name *is* the object: removing it deletes the object.
        self._record.backend.delete(self._record)

    def _where(self) -> str:
        return f"{self._record.backend.settings.public} {self._record.name!r}, "


class RedisEvent(_OnRedis, Event):
    """mpevent.Event whose flag lives on a Redis server: ``backend.Event()``.

    is_set(), set() and clear() are one round trip each; wait() reads the
    set() messages on the waiting thread's own pub/sub connection (its
    inbox, ``_inbox``); callbacks run on the listener (``_listener``).
    """

    __slots__ = ("__weakref__", "_name", "_record")


class RedisAsyncResult(_OnRedis, AsyncResult):
    """mpevent.AsyncResult whose value lives, signed, on a Redis server."""

    __slots__ = ("__weakref__", "_cache", "_name", "_record")
