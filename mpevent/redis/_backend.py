"""RedisBackend: mpevent.connect("redis://...") -- objects on a Redis server or cluster."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import redis

from .. import _checks
from .._base import BackendBase
from .._interface import CleanReport
from . import _inbox, _leases, _registry
from ._connection import Connection, Settings
from ._listener import close_listeners, use_listeners
from ._objects import RedisAsyncResult, RedisEvent
from ._record import RedisRecord


class _Factory:
    """``backend.Event(...)`` / ``backend.Event.open(name)``, like the local classes."""

    def __init__(self, backend: RedisBackend, cls: type[Any]) -> None:
        self._backend = backend
        self._cls = cls

    def __call__(self, name: str | None = None, create: bool = False) -> Any:
        return self._cls(self._backend, name, create)

    def open(self, name: str) -> Any:
        return self._cls(self._backend, _checks.check_opened(name))

    def __repr__(self) -> str:
        return f"<{self._cls.__name__} factory of {self._backend!r}>"


class RedisBackend(BackendBase):
    """Event and AsyncResult on one Redis server or cluster."""

    def __init__(self, url: str, authkey: bytes | str | None = None) -> None:
        self.settings = Settings.parse(url, authkey)
        self.connection = Connection(self.settings)
        self._nodes = self.connection.node_urls()
        use_listeners(self._nodes)
        self._scripts: dict[str, str] = {}  # script -> its SHA1
        self.Event = _Factory(self, RedisEvent)
        self.AsyncResult = _Factory(self, RedisAsyncResult)

    def __repr__(self) -> str:
        kind = "cluster" if self.connection.cluster else "server"
        return f"<mpevent Redis {kind} {self.settings.public}>"

    def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of ``_scripts`` on the node of *keys*, retrying a lost connection.

        By its SHA1 (EVALSHA); whole (EVAL, which caches it) on a node
        that does not know it yet (a restart, a new node).  On a server out of memory a
        script changes nothing (``_scripts``), and Connection.call raises
        MemoryError.
        """
        sha = self._scripts.get(script)
        if sha is None:
            sha = self._scripts[script] = hashlib.sha1(script.encode()).hexdigest()
        command = self.connection.command

        def evaluate() -> Any:
            try:
                return command("EVALSHA", sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:  # EVAL runs it and caches it there
                return command("EVAL", script, len(keys), *keys, *args)

        return self.connection.call(evaluate)

    def delete(self, record: RedisRecord) -> None:
        self.connection.call(lambda: self.connection.client.delete(record.key))

    def names(self) -> list[str]:
        """Names of the objects under this backend's prefix (for `list` and `clean`)."""
        pattern = f"{self.settings.prefix}:{{*}}"
        client = self.connection.client
        keys = self.connection.call(lambda: list(client.scan_iter(match=pattern, count=1000)))
        # An object's hash ends with its brace; its claim's lease does not.
        return sorted(
            key.decode().split("{", 1)[1].rsplit("}", 1)[0] for key in keys if key.endswith(b"}")
        )

    def open(self, name: str) -> Any:
        try:
            return self.Event.open(name)
        except TypeError:  # it is a result
            return self.AsyncResult.open(name)

    def summary(self) -> list[str]:
        ttl = self.settings.ttl_ms / 1000
        return [
            f"objects on {self.settings.public} (prefix {self.settings.prefix!r}; "
            f"each expires after {ttl:g} s unused, or up to a quarter more)"
        ]

    def clean(self, dry_run: bool = False) -> CleanReport:
        # Every key has a TTL that each use renews: a killed client's objects
        # expire on their own, and nothing else is left behind.
        ttl = self.settings.ttl_ms / 1000
        return CleanReport(
            [],
            f"objects on {self.settings.public} expire after {ttl:g} s unused: nothing is "
            "left behind to clean; remove_name() deletes one at once",
        )

    def close(self) -> None:
        """Close the connections, and this process's listeners no other backend uses.

        Claims made through it and not set are failed first (as exited):
        nothing would renew their leases.
        """
        _leases.release(self)
        _registry.forget(self)
        nodes, self._nodes = self._nodes, []  # a second close() releases nothing
        _inbox.close_nodes(close_listeners(nodes))
        self.connection.close()


_registry.make = RedisBackend

if TYPE_CHECKING:
    from .._interface import Backend

    _conforms: type[Backend] = RedisBackend  # mypy proves RedisBackend is a Backend
