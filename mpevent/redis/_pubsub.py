"""A subscriber: one pub/sub connection to one server node, and what its messages mean.

Both waiters of this backend read ``set()`` messages through a
:class:`Subscriber`: the listener (``_listener``, one thread per node and
process, for callbacks) and each blocking thread's inbox (``_inbox``).  This
module owns what they share, so that it is written once:

* the connection (a redis-py ``PubSub`` of the node) and how another thread
  ends it (``shut``: a blocked read fails as on a dropped connection);
* sharded subscriptions (``SSUBSCRIBE``) and their ends, and which end was
  asked for: a ``sunsubscribe`` the subscriber did not ask for means the
  node gave the channel's slot away (``MOVED``), one it asked for is only
  the goodbye;
* reading: at most one blocking wait, then whatever is buffered, each
  message turned into a :class:`Notice` (the one reading of a message); a
  subscription the node refuses (``MOVED`` for a stale slot map) is
  noted (``refused``) and skipped, so its confirmation never comes: an
  inbox's subscribe() raises at once, the listener's at its confirmation
  deadline (``confirmation_missing``);
* which channels stay subscribed after their last waiter (``Recent``), so
  the next wait on them costs no round trip.
"""

from __future__ import annotations

import collections
import contextlib
import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

import redis

# The meaning of a notice's generation beside a set()'s own number: None is
# "look again" (a confirmed subscription: a set() may have come before it;
# or a reconnect, after which messages may be lost), MOVED "the node ended
# the subscription: subscribe where the slot lives now, then look again",
# TICK "RECHECK seconds passed" (for waiters with no timer of their own to
# see whether their object vanished -- evicted, flushed and expired keys
# announce nothing -- or a claim's lease lapsed).
MOVED = -1
TICK = -2
RECHECK = 1.0  # seconds a waiter sleeps before reading its objects again


def parse_publication(data: bytes) -> tuple[int, tuple[int, bytes] | None]:
    """(generation, (slot, signed frame) or None) of a set()'s message.

    The message is ``<gen>``, or ``<gen> <slot> <signature><frame>`` when it
    carries a small value (``_scripts.STORE``).
    """
    head, _, rest = data.partition(b" ")
    if not rest:
        return int(head), None
    slot, _, signed = rest.partition(b" ")
    return int(head), (int(slot), signed)


class Notice(NamedTuple):
    """What one pub/sub message means to the waiters of its channel."""

    kind: str  # "ssubscribe", "smessage" or "sunsubscribe"
    channel: str
    # A confirmed subscription: None; a publication: its generation; an end
    # the node decided: MOVED; an end the subscriber asked for: MOVED too,
    # with asked set (nobody waits on it any more).
    generation: int | None
    carried: tuple[int, bytes] | None  # (slot, signed frame) of a small value
    asked: bool = False


def notice_of(message: dict[str, Any], leaving: set[str] = frozenset()) -> Notice | None:  # type: ignore[assignment]
    """The Notice of a redis-py pub/sub message; None for kinds we never subscribe to.

    *leaving*: channels whose end the subscriber asked for (it is removed
    from there when the goodbye arrives).
    """
    kind = message["type"]
    channel = message["channel"]
    if isinstance(channel, bytes):
        channel = channel.decode()
    if kind == "ssubscribe":
        return Notice(kind, channel, None, None)
    if kind == "smessage":
        generation, carried = parse_publication(message["data"])
        return Notice(kind, channel, generation, carried)
    if kind == "sunsubscribe":
        asked = channel in leaving
        if asked:
            leaving.discard(channel)
        return Notice(kind, channel, MOVED, None, asked)
    return None


def subscription_refused(node_url: str) -> redis.ConnectionError:
    """What a subscriber raises when the node refused a subscription (MOVED)."""
    return redis.ConnectionError(
        f"the node at {node_url} refused the subscription: the channel's slot is served "
        "elsewhere now (a failover or a reshard)"
    )


def confirmation_missing(timeout: float) -> redis.ConnectionError:
    """The error of a subscription the server did not confirm in time."""
    return redis.ConnectionError(f"no confirmation of the subscription within {timeout} s")


class Subscriber:
    """One pub/sub connection to the node at *node_url*, used by one reader at a time.

    ``ask`` and ``leave`` may be called from any thread (redis-py sends each
    command under its connection's lock); ``read`` only from the reader.
    """

    def __init__(self, node_url: str) -> None:
        client: Any = redis.Redis.from_url(node_url, socket_connect_timeout=2)
        self.node_url = node_url
        self.pubsub = client.pubsub()
        self.leaving: set[str] = set()  # ends we asked for: their goodbyes are expected
        self.refused = False  # a subscription was refused since the reader last looked

    def ask(self, channels: Iterable[str]) -> None:
        """Send SSUBSCRIBE for *channels* (confirmations arrive as notices)."""
        channels = list(channels)
        if channels:
            self.leaving.difference_update(channels)
            self.pubsub.ssubscribe(*channels)

    def leave(self, channels: Iterable[str]) -> None:
        """Send SUNSUBSCRIBE for *channels*; their goodbyes read as asked-for ends."""
        channels = list(channels)
        if channels:
            self.leaving.update(channels)
            self.pubsub.sunsubscribe(*channels)

    def read(self, timeout: float | None) -> list[Notice]:
        """Notices of what arrives: wait up to *timeout* for the first (None: for ever).

        Raises what redis-py raises for a dropped connection
        (redis.ConnectionError, redis.TimeoutError, OSError, ValueError).
        """
        notices: list[Notice] = []
        block, wait = timeout is None, max(timeout or 0.0, 0.0)
        while True:
            try:
                response = self.pubsub.parse_response(block=block, timeout=wait)
            except redis.ResponseError:
                self.refused = True  # see the module's docstring
                continue
            if response is None:
                return notices
            message = self.pubsub.handle_message(response)
            notice = None if message is None else notice_of(message, self.leaving)
            if notice is not None:
                notices.append(notice)
            block, wait = False, 0.0

    def fileno(self) -> int:
        connection = self.pubsub.connection
        if connection is None or connection._sock is None:
            raise redis.ConnectionError("the subscriber has no connection")
        return int(connection._sock.fileno())

    def shut(self, close: bool = False) -> None:
        """End the connection from another thread: its reader's blocked read fails.

        *close*: close the socket too (its reader may never come back to do it).
        """
        sock = getattr(self.pubsub.connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            if close:
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()


class Recent:
    """Channels kept subscribed with nobody waiting, most recently used last."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.channels: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, channel: object) -> bool:
        return channel in self.channels

    def __iter__(self) -> Any:
        return iter(self.channels)

    def use(self, channel: str) -> None:
        self.channels[channel] = None
        self.channels.move_to_end(channel)

    def forget(self, channel: str) -> None:
        self.channels.pop(channel, None)

    def evict(self, spare: Iterable[str] = ()) -> list[str]:
        """Take out the channels beyond the limit, oldest first, except *spare*."""
        spare = set(spare)
        oldest = list(self.channels)[: max(len(self.channels) - self.limit, 0)]
        excess = [channel for channel in oldest if channel not in spare]
        for channel in excess:
            del self.channels[channel]
        return excess
