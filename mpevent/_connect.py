"""mpevent.connect(): choose a backend by URL, from configuration by default."""

from __future__ import annotations

import importlib.util
import os

from ._interface import Backend
from ._urls import public_url


def connect(url: str | None = None, *, authkey: bytes | str | None = None) -> Backend:
    """A backend for *url* (default: ``MPEVENT_URL``, else shared memory).

    ``local://`` or ``shm://``: this machine's shared memory.
    ``redis://[:password@]host:port/db``, ``rediss://`` (TLS),
    ``unix:///path``: a Redis server, or any node of a Redis Cluster;
    query options ``prefix`` (default ``mpevent``) and ``ttl`` (seconds an
    unused object lives, default 86400).  Values stored in Redis are
    signed with *authkey* (default ``MPEVENT_AUTHKEY``), the same secret
    on every host.  Raises ValueError for an unknown scheme or a missing
    key, :class:`mpevent.BackendUnavailable` if the server cannot be reached.
    """
    url = url if url is not None else os.environ.get("MPEVENT_URL", "local://")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("local", "shm"):
        from .shm import LocalBackend

        return LocalBackend()
    if scheme in ("redis", "rediss", "unix"):
        if importlib.util.find_spec("redis") is None:
            raise ImportError("the Redis backend needs redis-py: pip install 'mpevent[redis]'")
        from .redis import RedisBackend
        from .redis._registry import register

        backend = RedisBackend(url, authkey)
        register(backend)
        return backend
    raise ValueError(
        f"{public_url(url)!r}: mpevent knows local://, shm://, redis://, rediss:// and unix:// URLs"
    )
