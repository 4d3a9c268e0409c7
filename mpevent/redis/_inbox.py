"""Inboxes: a blocking wait reads its own pub/sub connection, with no thread between.

A thread that blocks in ``wait()`` (``RedisRecord.wait_many``) owns one
pub/sub connection per server node, its *inbox*, and reads the ``set()``
messages of the objects it waits on there itself: the message wakes the
waiting thread directly, as a raw SUBSCRIBE client is woken, rather than a
listener thread that then wakes it (``_listener``, which stays the home of
``rawlink()`` callbacks and hence of asyncio waits).  A thread handoff per
wakeup was the largest cost beyond the round trips (docs/design.md).

No lost wakeup, as with the listener: the waiter subscribes, and reads the
server's confirmation, *before* it reads the state.  An inbox keeps the
channels it was asked for subscribed afterwards (the KEPT most recent), so
a thread that waits on the same objects again pays no round trip to
subscribe; messages that arrive meanwhile are read at the next wait, and
the generation each carries tells a stale one from a new one.

Messages are delivered to the wait as ``deliver(channel, generation)``,
with the meanings of ``_listener.Wakeup``: a generation, None ("look
again": a (re)subscription was confirmed), or MOVED (the node dropped the
subscription: the slot moved).  Each inbox belongs to one thread of one
process: a forked child makes its own.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence

from ._pubsub import (
    MOVED,
    Notice,
    Recent,
    Subscriber,
    confirmation_missing,
    subscription_refused,
)

Deliver = Callable[[str, int | None], None]
KEPT = 64  # channels an inbox keeps subscribed after its waits, most recent last


class Inbox:
    """One thread's own pub/sub connection to one node."""

    def __init__(self, node_url: str) -> None:
        self.node_url = node_url
        self.subscriber = Subscriber(node_url)
        self.pid = os.getpid()
        self.closed = False  # by close_nodes(), from any thread
        self.subscribed = Recent(KEPT)
        # channel -> (generation, slot, signed frame) a message carried (_scripts.STORE)
        self.carried: dict[str, tuple[int, int, bytes]] = {}

    def subscribe(
        self,
        channels: Sequence[str],
        deliver: Deliver,
        keep: Collection[str] = (),
        timeout: float = 2.0,
    ) -> None:
        """Subscribe to *channels* and return once the server has confirmed each.

        Messages read meanwhile are delivered.  Channels beyond the KEPT
        most recent are unsubscribed, except *channels* and *keep* (those of
        the wait in progress).  Raises redis.ConnectionError if the
        connection fails or no confirmation comes within *timeout*.
        """
        new = [channel for channel in channels if channel not in self.subscribed]
        if new:
            self.subscriber.ask(new)
            pending = set(new)
            deadline = time.monotonic() + timeout
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise confirmation_missing(timeout)
                self.subscriber.refused = False
                for notice in self._read(left, deliver):
                    if notice.kind == "ssubscribe":
                        pending.discard(notice.channel)
                if self.subscriber.refused:  # MOVED: this node does not serve the slot
                    raise subscription_refused(self.subscriber.node_url)
        for channel in channels:
            self.subscribed.use(channel)
        old = self.subscribed.evict(spare=[*channels, *keep])
        for channel in old:
            self.carried.pop(channel, None)
        self.subscriber.leave(old)  # the goodbyes are read (and ignored) later

    def pump(self, timeout: float, deliver: Deliver) -> bool:
        """Deliver what arrives within *timeout* seconds; False if nothing did."""
        return bool(self._read(timeout, deliver))

    def fileno(self) -> int:
        return self.subscriber.fileno()

    def close(self) -> None:
        self.subscriber.close()

    def _read(self, timeout: float, deliver: Deliver) -> list[Notice]:
        """Read at least one message (waiting up to *timeout*), then what is buffered."""
        notices = self.subscriber.read(timeout)
        for notice in notices:
            self._dispatch(notice, deliver)
        return notices

    def _dispatch(self, notice: Notice, deliver: Deliver) -> None:
        channel = notice.channel
        if notice.generation == MOVED:
            if notice.asked or channel not in self.subscribed:
                return  # the goodbye of our own sunsubscribe
            # The node gave the slot away.  Subscribe anew where it lives.
            self.subscribed.forget(channel)
            self.carried.pop(channel, None)
        elif notice.kind == "smessage":
            if notice.carried is None:
                self.carried.pop(channel, None)
            else:
                assert notice.generation is not None
                self.carried[channel] = (notice.generation, *notice.carried)
        deliver(channel, notice.generation)

    def take_carried(self, channel: str, generation: int) -> tuple[int, bytes] | None:
        """(slot, signed frame) that the message of *generation* carried, if any."""
        found = self.carried.get(channel)
        if found is None or found[0] != generation:
            return None
        return found[1], found[2]


_waits: collections.Counter[str] = collections.Counter()  # channel -> waits subscribed
_waits_lock = threading.Lock()


@contextlib.contextmanager
def counted(channels: Sequence[str]) -> Iterator[None]:
    """Count a wait on *channels* as subscribed while it lasts (for waiting())."""
    with _waits_lock:
        _waits.update(channels)
    try:
        yield
    finally:
        with _waits_lock:
            _waits.subtract(channels)
            for channel in channels:
                if _waits[channel] <= 0:
                    del _waits[channel]


def waiting() -> int:
    """How many waits of this process are subscribed and reading (statistics, tests)."""
    with _waits_lock:
        return sum(_waits.values())


class _Inboxes(threading.local):
    def __init__(self) -> None:
        self.by_node: dict[str, Inbox] = {}


_inboxes = _Inboxes()
_all: weakref.WeakSet[Inbox] = weakref.WeakSet()  # every thread's, for close_nodes()


def inbox_for(node_url: str) -> Inbox:
    """This thread's inbox for the node at *node_url* (a new one after a fork)."""
    inbox = _inboxes.by_node.get(node_url)
    if inbox is not None and inbox.closed and inbox.pid == os.getpid():
        drop(node_url)
        inbox = None
    if inbox is None or inbox.pid != os.getpid():
        # An inherited inbox is the parent's connection: leave it alone.
        inbox = _inboxes.by_node[node_url] = Inbox(node_url)
        _all.add(inbox)
    return inbox


def close_nodes(node_urls: Sequence[str]) -> None:
    """Close every thread's inbox of these nodes (their last backend is closing).

    Another thread owns each inbox, so only its socket is shut and closed
    here: a wait blocked on it fails as on a dropped connection, and the
    owner's next wait starts a fresh inbox.
    """
    for inbox in list(_all):
        if inbox.node_url in node_urls and inbox.pid == os.getpid() and not inbox.closed:
            inbox.closed = True
            inbox.subscriber.shut(close=True)


def drop(node_url: str) -> None:
    """Forget this thread's inbox of *node_url* (its connection failed): the next is new."""
    inbox = _inboxes.by_node.pop(node_url, None)
    if inbox is not None and inbox.pid == os.getpid():
        inbox.close()


def pump(inboxes: Sequence[Inbox], timeout: float, deliver: Deliver) -> bool:
    """Deliver what any of *inboxes* receives within *timeout*; False if nothing came."""
    if len(inboxes) == 1:
        return inboxes[0].pump(timeout, deliver)
    if any(inbox.pump(0.0, deliver) for inbox in inboxes):
        return True
    readable, _, _ = select.select(inboxes, [], [], max(timeout, 0.0))
    return any(inbox.pump(0.0, deliver) for inbox in readable)
