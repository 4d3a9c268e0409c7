"""Where the objects live: a Redis server or cluster, its URL, credentials and retries.

A URL names the server (``redis://``, ``rediss://`` for TLS, ``unix://``);
its query may set ``prefix`` (key prefix, default ``mpevent``), ``ttl``
(seconds an unused object lives, default one day) and ``lease`` (seconds a
claim outlives its claimer's last renewal, default 3: ``_leases``).  The same URL works for
a single server and for any node of a Redis Cluster: which one it is, is
asked of the server at connect time.

Secrets never leave this module: :func:`public_url` drops the password,
and every repr, error message and pickle uses it.  A process that
unpickles a handle takes the credentials from its own configuration
(``MPEVENT_URL``), and the HMAC key that signs values from
``MPEVENT_AUTHKEY`` (or ``connect(..., authkey=...)``).

Calls that cannot reach the server are retried ``RETRIES`` times over
about a second, then raise :class:`BackendUnavailable`, a
:class:`ConnectionError`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.parse
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis
import redis.cluster

from .._errors import BackendUnavailable
from .._urls import public_url, unsplit

RETRIES: Final = 4
RETRY_BACKOFF: Final = (0.05, 0.15, 0.3, 0.5)  # seconds between attempts: ~1 s in all
DEFAULT_PREFIX: Final = "mpevent"
DEFAULT_TTL: Final = 24 * 3600
DEFAULT_LEASE: Final = 3.0
MINIMUM_LEASE_MS: Final = 300

T = TypeVar("T")

# Sharded pub/sub (SSUBSCRIBE, SPUBLISH) arrived in Redis 7.0.
MINIMUM_VERSION: Final = (7, 0)
# Policies under which the server deletes keys it needs room for: with a
# TTL on every mpevent key, the volatile-* ones apply to ours too.
EVICTING: Final = frozenset(
    {
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    }
)
_warned: set[str] = set()  # servers warned about, once per process
_warned_lock = threading.Lock()


def _warn_once(public: str, message: str) -> None:
    server = public.split("?", 1)[0]  # one server, whatever the prefix or TTL
    with _warned_lock:
        if server in _warned:
            return
        _warned.add(server)
    warnings.warn(message, RuntimeWarning, stacklevel=5)


def server_facts(client: Any) -> dict[str, str]:
    """The server's version, maxmemory-policy and proto-max-bulk-len (the largest
    argument it accepts); "unknown" where CONFIG is refused."""
    version = str(client.info("server").get("redis_version", "0"))
    try:
        config = client.config_get("maxmemory-policy")
        config.update(client.config_get("proto-max-bulk-len"))
    except redis.exceptions.ResponseError:  # CONFIG renamed or disabled (managed services)
        config = {}
    return {
        "version": version,
        "maxmemory-policy": str(config.get("maxmemory-policy", "unknown")),
        "proto-max-bulk-len": str(config.get("proto-max-bulk-len", "unknown")),
    }


def reply_parser() -> str:
    """Which parser redis-py reads replies with (hiredis is several times faster on values)."""
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "pure Python (pip install hiredis)"


DEFAULT_MAX_BULK = 512 << 20  # Redis's default proto-max-bulk-len


def too_old(version: str) -> bool:
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return numbers < MINIMUM_VERSION


def check_server(client: Any, public: str) -> dict[str, str]:
    """Refuse a server older than 7.0; warn once if it may evict our keys.

    Warn rather than refuse an evicting policy: managed services often
    default to one (volatile-lru) and users may run with memory to spare;
    a vanished object then raises LookupError, never a silent False.
    """
    facts = server_facts(client)
    version, policy = facts["version"], facts["maxmemory-policy"]
    if too_old(version):
        raise BackendUnavailable(
            f"the server at {public} runs Redis {version}; mpevent needs Redis "
            f"{'.'.join(map(str, MINIMUM_VERSION))} or later (sharded pub/sub)"
        )
    if policy == "unknown":
        _warn_once(
            public,
            f"cannot read maxmemory-policy of {public} (CONFIG is refused): if the server "
            "evicts keys, mpevent objects can vanish (LookupError); use noeviction",
        )
    elif policy in EVICTING:
        _warn_once(
            public,
            f"the server at {public} evicts keys under memory pressure (maxmemory-policy "
            f"{policy}): mpevent objects can vanish, and then raise LookupError; fix it with "
            "CONFIG SET maxmemory-policy noeviction, or give mpevent a server of its own",
        )
    return facts


def inspect_server(url: str) -> dict[str, str]:
    """server_facts() of the server at *url*, for doctor; raises if it does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return server_facts(client)
    finally:
        client.close()


@dataclass(frozen=True)
class Settings:
    """What a URL and the environment say about a server."""

    url: str  # with credentials: never printed
    public: str
    prefix: str
    ttl_ms: int
    authkey: bytes
    lease_ms: int = int(DEFAULT_LEASE * 1000)

    @classmethod
    def parse(cls, url: str, authkey: bytes | str | None = None) -> Settings:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{public_url(url)!r} is not a Redis URL: use redis://host:port/db, "
                "rediss:// (TLS) or unix:///path/to/socket"
            )
        query = urllib.parse.parse_qs(parts.query)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        ttl = query.pop("ttl", [str(DEFAULT_TTL)])[0]
        lease = query.pop("lease", [str(DEFAULT_LEASE)])[0]
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix {prefix!r} must be non-empty, without braces")
        ttl_ms = _milliseconds(ttl)
        if ttl_ms <= 0:
            raise ValueError(f"ttl={ttl!r} must be a positive number of seconds")
        lease_ms = _milliseconds(lease)
        if lease_ms < MINIMUM_LEASE_MS:
            raise ValueError(
                f"lease={lease!r} must be a number of seconds, at least "
                f"{MINIMUM_LEASE_MS / 1000:g} (a claim's lease is renewed every third of it)"
            )
        rest = urllib.parse.urlencode({key: value[0] for key, value in query.items()})
        client_url = unsplit(parts._replace(query=rest))
        key = authkey if authkey is not None else os.environ.get("MPEVENT_AUTHKEY")
        if not key:
            raise ValueError(
                "values stored in Redis are signed, and no key was given: set "
                "MPEVENT_AUTHKEY (the same secret on every host) or pass authkey= to connect()"
            )
        return cls(
            url=client_url,
            public=public_url(url),
            prefix=prefix,
            ttl_ms=ttl_ms,
            authkey=key.encode() if isinstance(key, str) else key,
            lease_ms=lease_ms,
        )


def _milliseconds(seconds: str) -> int:
    """*seconds* as whole milliseconds; 0 if it is not a number."""
    try:
        return int(float(seconds) * 1000)
    except (ValueError, OverflowError):  # not a number, nan, inf
        return 0


def with_credentials(url: str) -> str:
    """*url*, with the password of ``MPEVENT_URL`` if that names the same server."""
    configured = os.environ.get("MPEVENT_URL", "")
    if configured and public_url(configured).split("?")[0] == public_url(url).split("?")[0]:
        query = urllib.parse.urlsplit(url).query
        base = urllib.parse.urlsplit(configured)
        return unsplit(base._replace(query=query))
    return url


class Connection:
    """A client for one server or cluster, and the retry rule of every call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        probe = redis.Redis.from_url(settings.url, socket_connect_timeout=2)
        try:
            cluster = self.call(lambda: probe.info("cluster").get("cluster_enabled") == 1)
            self.server = self.call(lambda: check_server(probe, settings.public))
        finally:
            probe.close()
        self.cluster = bool(cluster)
        self.client: Any
        if self.cluster:
            self.client = redis.cluster.RedisCluster.from_url(
                settings.url, socket_connect_timeout=2
            )
        else:
            self.client = redis.Redis.from_url(settings.url, socket_connect_timeout=2)
        # A MULTI with EVAL in it (RedisRecord.store): on one server only, as
        # redis-py's cluster pipelines refuse EVAL.
        self.scripted_multi = not self.cluster
        # The largest value the server takes: to more it replies with a
        # protocol error and drops the connection, so it is checked first.
        bulk = self.server["proto-max-bulk-len"]
        self.largest_value = int(bulk) if bulk.isdigit() else DEFAULT_MAX_BULK
        # One server: the idle connections of command() (none for a cluster).
        self._idle: list[Any] = []
        self._own: weakref.WeakSet[Any] = weakref.WeakSet()

    def command(self, *args: Any) -> Any:
        """One command and its raw reply, on a connection of our own.

        A cluster's go through its client (which routes them).  On one
        server, redis-py's client call (its pool, its command hooks and
        wrappers) costs about as much client time again as the socket's own
        round trip, on each of a wait's, set()'s and clear()'s calls
        (docs/design.md, "Where a round goes"); a connection taken from our
        own idle list and written directly does not.  The list, not a
        thread-local: under gevent a thread-local is a greenlet's, and a
        thousand greenlets would hold a thousand connections.  A dropped
        connection raises redis.ConnectionError (``call`` retries on a new
        one); a connection whose reply may be half read is never reused; a
        forked child never uses its parent's.
        """
        if self.cluster:
            return self.client.execute_command(*args)
        try:
            own = self._idle.pop()
        except IndexError:
            own = None
        if own is None or own.pid != os.getpid():
            pool = self.client.connection_pool
            own = pool.connection_class(**pool.connection_kwargs)
            self._own.add(own)
        try:
            own.send_command(*args)
            reply = own.read_response()
        except redis.exceptions.ResponseError:
            self._idle.append(own)  # the server's refusal, read whole
            raise
        except BaseException:
            own.disconnect()
            raise
        self._idle.append(own)
        return reply

    def node_url(self, channel: str) -> str:
        """The URL of the server that owns *channel*'s slot (itself, unless a cluster)."""
        if not self.cluster:
            return self.settings.url
        slot = self.client.keyslot(channel)
        node = self.client.nodes_manager.get_node_from_slot(slot)
        parts = urllib.parse.urlsplit(self.settings.url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + f"{node.host}:{node.port}"
        return unsplit(parts._replace(netloc=netloc, path=""))

    def call(self, action: Callable[[], T]) -> T:
        """Run *action*, retrying a lost connection; BackendUnavailable at the end.

        The server's refusals become the errors of the same causes here: out
        of memory (maxmemory reached, a policy that does not evict) is
        MemoryError, as a full /dev/shm is; a command the Redis user may
        not run (ACL) is PermissionError.  Both name the fix.
        """
        for attempt in range(RETRIES + 1):
            try:
                return action()
            except redis.exceptions.OutOfMemoryError:
                raise MemoryError(
                    f"the Redis server at {self.settings.public} is out of memory (its used "
                    "memory is over maxmemory and its maxmemory-policy does not evict); "
                    "nothing was changed. Free memory there (remove_name() deletes an object "
                    "at once, unused ones expire after their TTL; other keys may be larger), "
                    "raise maxmemory, or store smaller values"
                ) from None
            except redis.exceptions.NoPermissionError as exc:
                raise PermissionError(
                    f"the Redis user on {self.settings.public} may not run a command mpevent "
                    f"needs ({exc}); grant the scripting, hash, key and sharded pub/sub "
                    "commands, e.g. ACL SETUSER <user> +@scripting +@hash +@keyspace "
                    "+@pubsub +ping"
                ) from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if attempt == RETRIES:
                    raise BackendUnavailable(
                        f"the Redis server at {self.settings.public} cannot be reached "
                        f"(tried {RETRIES + 1} times over about a second): "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                time.sleep(RETRY_BACKOFF[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    def refresh_slots(self) -> None:
        """Read a cluster's slot map again (after a failover or a reshard that no
        reply has told the client of yet); nothing on one server."""
        if self.cluster:
            with contextlib.suppress(redis.RedisError, OSError):  # the next try tells
                self.client.nodes_manager.initialize()

    def node_urls(self) -> list[str]:
        """The URL of every node (one, unless a cluster)."""
        if not self.cluster:
            return [self.settings.url]
        parts = urllib.parse.urlsplit(self.settings.url)
        auth = parts.netloc.rpartition("@")[0]
        return [
            unsplit(
                parts._replace(
                    netloc=(auth + "@" if auth else "") + f"{node.host}:{node.port}", path=""
                )
            )
            for node in self.client.get_nodes()
        ]

    def close(self) -> None:
        self._idle.clear()
        for own in list(self._own):
            own.disconnect()
        if self.cluster:
            # RedisCluster.close() leaves the nodes' pooled connections open.
            for node in self.client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()
        self.client.close()
