"""Waiting on many objects at once: mpevent.wait() and mpevent.iwait().

Like gevent.wait / gevent.iwait, for any mix of Events and AsyncResults
from any processes.  The calling thread queues one link per object on its
single waiter slot (``Record.wait_many``) and sleeps once: no thread
and no polling per object.  The blocking itself is the one wait path of
every call, ``_linkable.block_until_any``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from . import _checks
from ._linkable import Linkable, _Closed, block_until_any

L = TypeVar("L", bound=Linkable)


def _check_objects(objects: Iterable[L]) -> list[L]:
    listed = list(objects)
    for obj in listed:
        if not isinstance(obj, Linkable):
            raise TypeError(
                f"can only wait on mpevent Events and AsyncResults, not {type(obj).__qualname__!r}"
            )
        if isinstance(obj._record, _Closed):
            raise ValueError(f"operation on a closed mpevent.{obj._PUBLIC} handle")
    if len({type(obj._record) for obj in listed}) > 1:
        raise TypeError(
            "cannot wait at once on objects of different backends (shared memory, Redis): "
            "wait on each backend's objects separately"
        )
    return listed


def iwait(
    objects: Iterable[L], timeout: float | None = None, count: int | None = None
) -> Iterator[L]:
    """Yield objects as they become ready (set), at most *count* of them.

    Stops early when *timeout* seconds have passed.  Objects ready at the
    start are yielded first, in the order given.  Raises TypeError for a
    non-mpevent object or a bad timeout, ValueError for *count* out of range.
    """
    pending = _check_objects(objects)
    wanted = _checks.check_count(count, len(pending))
    seconds = _checks.check_timeout(timeout)
    deadline = None if seconds is None else time.monotonic() + max(seconds, 0.0)
    yielded = 0
    while pending and yielded < wanted:
        remaining = None if deadline is None else deadline - time.monotonic()
        positions = block_until_any(pending, remaining)
        if not positions:
            return
        for position in positions:
            yield pending[position]
            yielded += 1
            if yielded == wanted:
                return
        taken = set(positions)
        pending = [obj for i, obj in enumerate(pending) if i not in taken]


def wait(objects: Iterable[L], timeout: float | None = None, count: int | None = None) -> list[L]:
    """Block until *count* (default: all) *objects* are ready; return them in that order.

    Returns fewer if *timeout* seconds pass first.  Same errors as iwait().
    """
    return list(iwait(objects, timeout, count))
