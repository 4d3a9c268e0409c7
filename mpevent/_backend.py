"""The interface between the public layer and the backends.

The public classes (``event.py``, ``asyncresult.py``, ``_linkable.py``),
``_select`` and the asyncio and gevent waiting call their record only
through :class:`RecordBackend`, the one interface both backends implement:
``shm._record.Record`` (shared memory, this machine) and
``redis._record.RedisRecord`` (a Redis server or cluster, any machine).
They import this module and no backend.

A backend object (``shm.LocalBackend``, ``redis.RedisBackend``) derives
from :class:`Backend`: ``Event(...)``, ``AsyncResult(...)``, ``wait(...)``,
``iwait(...)`` and ``close()``; ``mpevent.connect()`` (``_connect``) picks
one by URL, and the package root installs the shared-memory one as the
default (:func:`install_default`).
"""

from __future__ import annotations

import pickle
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

L = TypeVar("L")


class BackendUnavailable(ConnectionError):
    """The server holding a backend's objects cannot be reached (after retrying)."""


def unsplit(parts: urllib.parse.SplitResult) -> str:
    """urlunsplit() that keeps the ``//`` of a URL without a host (``unix:///path``)."""
    url = urllib.parse.urlunsplit(parts)
    if not parts.netloc and parts.scheme and not url.startswith(f"{parts.scheme}://"):
        url = f"{parts.scheme}://" + url[len(parts.scheme) + 1 :]
    return url


def public_url(url: str) -> str:
    """*url* without its password (and user), for reprs, errors and pickles."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return unsplit(parts._replace(netloc=netloc))


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


class Backend:
    """What every backend offers beside its ``Event`` and ``AsyncResult``."""

    def wait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> list[L]:
        """mpevent.wait() for this backend's objects."""
        from . import _select

        return _select.wait(objects, timeout, count)  # type: ignore[type-var]

    def iwait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> Iterator[L]:
        """mpevent.iwait() for this backend's objects."""
        from . import _select

        return _select.iwait(objects, timeout, count)  # type: ignore[type-var]

    def close(self) -> None:
        """Let go of the backend's connections (nothing, for shared memory)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default: Backend | None = None


def install_default(backend: Backend) -> None:
    """Make *backend* the one ``mpevent.Event()`` and ``mpevent.AsyncResult()`` use.

    The package root installs the shared-memory backend on import; this
    module never imports a backend itself.
    """
    global _default
    _default = backend


def default() -> Any:
    """The backend of ``mpevent.Event()``: shared memory (see install_default)."""
    if _default is None:
        raise RuntimeError("no default mpevent backend: import mpevent, not only its modules")
    return _default
