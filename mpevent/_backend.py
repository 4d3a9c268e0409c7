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

import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

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


class Backend:
    """What every backend offers: its ``Event`` and ``AsyncResult``, and waiting on them."""

    # The backend's classes, or factories of them (``backend.Event(name)``,
    # ``backend.Event.open(name)``); typed loosely: they live above this layer.
    Event: Any
    AsyncResult: Any

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


def default() -> Backend:
    """The backend of ``mpevent.Event()``: shared memory (see install_default)."""
    if _default is None:
        raise RuntimeError("no default mpevent backend: import mpevent, not only its modules")
    return _default
