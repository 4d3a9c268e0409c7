"""One backend per server per process: what unpickled handles attach to.

A handle pickles to (URL without the password, name).  The process that
unpickles it uses the backend it already has for that server, or makes one
from the URL and its own credentials (``MPEVENT_URL``, ``MPEVENT_AUTHKEY``).
``_backend`` installs the constructor (``make``), so this module imports
neither it nor the classes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._connection import with_credentials

make: Callable[[str], Any] | None = None  # RedisBackend, set by _backend
_backends: dict[str, Any] = {}
_lock = threading.Lock()


def backend_for(public_url: str) -> Any:
    """The backend for the server at *public_url*, made on first use."""
    with _lock:
        backend = _backends.get(public_url)
        if backend is None:
            assert make is not None, "mpevent.redis._backend is not imported"
            backend = _backends[public_url] = make(with_credentials(public_url))
        return backend


def register(backend: Any) -> None:
    """Make *backend* the one that unpickled handles of its server use."""
    with _lock:
        _backends.setdefault(backend.settings.public, backend)


def forget(backend: Any) -> None:
    """*backend* is closing: later handles of its server make a new one."""
    with _lock:
        public = backend.settings.public
        if _backends.get(public) is backend:
            del _backends[public]


def close_all() -> None:
    """Close every backend this process made (for tests, and at the end)."""
    with _lock:
        backends = list(_backends.values())
    for backend in backends:
        backend.close()
