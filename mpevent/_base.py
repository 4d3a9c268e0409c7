"""What every backend object shares (waiting, closing), and which one is the default.

A backend object (``shm.LocalBackend``, ``redis.RedisBackend``) derives
from :class:`BackendBase`, which implements the waiting half of
:class:`mpevent._interface.Backend` through ``_select``; each backend adds
its classes, names, summary and cleaning.  ``mpevent.connect()``
(``_connect``) picks one by URL, and the package root installs the
shared-memory one as the default (:func:`install_default`), which
``mpevent.Event()`` and ``mpevent.AsyncResult()`` use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from . import _select

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._interface import Backend
    from ._linkable import Linkable

L = TypeVar("L", bound="Linkable")


class BackendBase:
    """The parts of a backend that do not depend on where its objects live."""

    def wait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> list[L]:
        """mpevent.wait() for this backend's objects."""
        return _select.wait(objects, timeout, count)

    def iwait(
        self, objects: Iterable[L], timeout: float | None = None, count: int | None = None
    ) -> Iterator[L]:
        """mpevent.iwait() for this backend's objects."""
        return _select.iwait(objects, timeout, count)

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
