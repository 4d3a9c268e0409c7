"""LocalBackend: ``mpevent.connect("local://")`` -- this machine's shared memory."""

from __future__ import annotations

from .._backend import Backend
from ._objects import AsyncResult, Event


class LocalBackend(Backend):
    """This machine's shared memory: the objects ``mpevent.Event()`` makes."""

    Event = Event
    AsyncResult = AsyncResult

    def __repr__(self) -> str:
        return "<mpevent shared-memory backend>"
