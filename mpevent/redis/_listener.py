"""Notifications: one pub/sub connection and thread per server node, per process.

A blocked waiter costs nothing: it sleeps on a local ``threading.Event``
registered under its object's channel, and the listener thread, blocked in
a socket read on the node's pub/sub connection (no timeout, no polling),
wakes it when a ``set()`` anywhere publishes on that channel.  The waiter
then re-reads the object's state: the message says only "look again".

No lost wakeup: a waiter subscribes, and waits for the server to confirm
the subscription, *before* it reads the state; a set() after that read
publishes after the subscription, so its message arrives.

rawlink() callbacks are registered the same way and run on the listener
thread, which is this backend's hub.  When the connection drops (server
restart), redis-py reconnects and subscribes again; every local waiter is
woken to re-read its state, since a message sent meanwhile is lost.  When
a cluster moves a slot to another node, the old node ends the
subscriptions of its channels; their waiters are told (``MOVED``) and
subscribe again on the new owner before they look again.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import redis

from .. import _lifecycle

# Called with the generation a set() published, None for "look again" (a new
# subscription, or a reconnect after which messages may be lost), or MOVED:
# the object's slot moved to another node of a cluster (resharding), the
# server dropped the subscription, and the waiter must subscribe again
# where the slot lives now, then look again; or TICK: RECHECK seconds
# passed with no message, for waiters that have no timer of their own
# (rawlink callbacks, hence wait_async) to see whether their object vanished
# (evicted, flushed, expired: a vanished key announces nothing).
Wakeup = Callable[[int | None], object]
MOVED = -1
TICK = -2
RECHECK = 1.0  # seconds between TICKs while anyone is subscribed
IDLE_KEPT = 256  # channels kept subscribed with nobody waiting, most recent first


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
    """What one pub/sub message means to the waiters of its channel.

    The one reading of a message, for both subscribers: the listener
    (callbacks) and each thread's inbox (blocking waits).
    """

    kind: str  # "ssubscribe", "smessage" or "sunsubscribe"
    channel: str
    # The Wakeup's argument: a confirmed subscription means None ("look
    # again": a set() may have come before it), a publication its
    # generation, and a subscription the node ended MOVED -- unless the
    # subscriber itself asked for that end, which only it knows.
    generation: int | None
    carried: tuple[int, bytes] | None  # (slot, signed frame) of a small value


def notice_of(message: dict[str, Any]) -> Notice | None:
    """The Notice of a redis-py pub/sub message; None for kinds we never subscribe to."""
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
        return Notice(kind, channel, MOVED, None)
    return None


class Listener:
    """The pub/sub connection of one node, its thread and its subscribers."""

    def __init__(self, node_url: str) -> None:
        client: Any = redis.Redis.from_url(node_url, socket_connect_timeout=2)
        self.pubsub = client.pubsub()
        self._lock = threading.Lock()
        self._wakeups: dict[str, list[Wakeup]] = {}  # channel -> registered wakeups
        self._confirmed: dict[str, threading.Event] = {}  # channel -> subscription acked
        self._idle: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._thread: threading.Thread | None = None
        self._closed = False

    def subscribe(self, channel: str, wakeup: Wakeup, timeout: float = 2.0) -> None:
        """Call *wakeup* (on the listener thread) at every publication on *channel*.

        Returns once the server has confirmed the subscription.  Raises
        redis.ConnectionError if it cannot be sent.
        """
        with self._lock:
            listeners = self._wakeups.setdefault(channel, [])
            listeners.append(wakeup)
            self._idle.pop(channel, None)
            confirmed = self._confirmed.get(channel)
            first = confirmed is None
            if first:
                confirmed = self._confirmed[channel] = threading.Event()
        if first:
            try:
                self.pubsub.ssubscribe(channel)
            except BaseException:
                self._abandon(channel, wakeup)
                raise
            self._start()
        assert confirmed is not None
        if not confirmed.wait(timeout):
            self._abandon(channel, wakeup)
            raise redis.ConnectionError(f"no confirmation of the subscription within {timeout} s")

    def _abandon(self, channel: str, wakeup: Wakeup) -> None:
        """A subscription that failed: forget it wholly, so the next try sends it again."""
        with self._lock:
            listeners = self._wakeups.get(channel, [])
            if wakeup in listeners:
                listeners.remove(wakeup)
            if not listeners:
                self._wakeups.pop(channel, None)
                self._confirmed.pop(channel, None)
                self._idle.pop(channel, None)

    def unsubscribe(self, channel: str, wakeup: Wakeup) -> None:
        """Forget *wakeup*.

        A channel nobody waits on stays subscribed, among the IDLE_KEPT most
        recently used, so the next wait on it costs no round trip; older
        ones are unsubscribed.
        """
        evicted = []
        with self._lock:
            listeners = self._wakeups.get(channel, [])
            if wakeup in listeners:
                listeners.remove(wakeup)
            if listeners:
                return
            self._idle[channel] = None
            self._idle.move_to_end(channel)
            while len(self._idle) > IDLE_KEPT:
                old, _ = self._idle.popitem(last=False)
                if not self._wakeups.get(old):
                    self._wakeups.pop(old, None)
                    self._confirmed.pop(old, None)
                    evicted.append(old)
        if evicted:
            with contextlib.suppress(redis.ConnectionError, OSError):  # gone with it anyway
                self.pubsub.sunsubscribe(*evicted)

    def subscribers(self) -> int:
        """How many wakeups are registered (for statistics and tests)."""
        with self._lock:
            return sum(len(listeners) for listeners in self._wakeups.values())

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="mpevent-redis", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pid = os.getpid()
        backoff = 0.05
        while os.getpid() == pid and not self._closed:
            try:
                if self.subscribers():
                    # Someone waits: wake each RECHECK seconds to TICK them.
                    response = self.pubsub.parse_response(block=False, timeout=RECHECK)
                    if response is None:
                        self._tick()
                        continue
                else:  # a blocking read with no timeout: an idle listener never wakes
                    response = self.pubsub.parse_response(block=True)
                message = self.pubsub.handle_message(response)
            except redis.ResponseError:
                # A subscription refused (MOVED: a stale slot map); its caller
                # times out waiting for the confirmation and tries again.
                continue
            except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
                if self._closed:
                    return
                self._wake_all()  # a publication may have been lost: everyone looks again
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                self._resubscribe()
                continue
            backoff = 0.05
            if message is not None:
                self._dispatch(message)

    def close(self) -> None:
        """Stop the thread and drop the connection; waiters look again and fail."""
        self._closed = True
        thread = self._thread
        with contextlib.suppress(Exception):
            connection = self.pubsub.connection
            if connection is not None and connection._sock is not None:
                import socket

                connection._sock.shutdown(socket.SHUT_RDWR)  # ends the blocked read
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.pubsub.close()
        self._wake_all()

    def _resubscribe(self) -> None:
        with self._lock:
            channels = list(self._wakeups)
            for channel in channels:
                self._confirmed[channel] = threading.Event()
        try:
            if channels:
                self.pubsub.ssubscribe(*channels)
        except (redis.ConnectionError, OSError):
            return  # the next read fails too and brings us back here

    def _dispatch(self, message: dict[str, Any]) -> None:
        notice = notice_of(message)
        if notice is None:
            return
        channel = notice.channel
        with self._lock:
            if notice.generation == MOVED:
                if channel not in self._wakeups:
                    return  # ours: we unsubscribe only channels nobody waits on
                # The node gave the slot away.  Its waiters move with it.
                wakeups = self._wakeups.pop(channel)
                self._confirmed.pop(channel, None)
                self._idle.pop(channel, None)
            else:
                if notice.kind == "ssubscribe":
                    confirmed = self._confirmed.get(channel)
                    if confirmed is not None:
                        confirmed.set()
                wakeups = list(self._wakeups.get(channel, []))
        for wakeup in wakeups:
            wakeup(notice.generation)

    def _tick(self) -> None:
        with self._lock:
            wakeups = [wakeup for listeners in self._wakeups.values() for wakeup in listeners]
        for wakeup in wakeups:
            wakeup(TICK)

    def _wake_all(self) -> None:
        with self._lock:
            wakeups = [wakeup for listeners in self._wakeups.values() for wakeup in listeners]
        for wakeup in wakeups:
            wakeup(None)


_listeners: dict[str, Listener] = {}
_users: collections.Counter[str] = collections.Counter()  # open backends per node URL
_listeners_lock = threading.Lock()


def listener_for(node_url: str) -> Listener:
    """This process's listener for the node at *node_url*, started on first use."""
    with _listeners_lock:
        listener = _listeners.get(node_url)
        if listener is None:
            listener = _listeners[node_url] = Listener(node_url)
        return listener


def use_listeners(node_urls: list[str]) -> None:
    """A backend of these nodes opened: their listeners stay until it closes."""
    with _listeners_lock:
        _users.update(node_urls)


def close_listeners(node_urls: list[str]) -> list[str]:
    """A backend of *node_urls* is closing: close the listeners no other backend uses.

    Returns those nodes' URLs (the inboxes of their waits close too).

    Two backends of one server in a process share its listener, so closing
    one must not end the waits of the other.
    """
    with _listeners_lock:
        _users.subtract(node_urls)
        unused = [url for url in node_urls if _users[url] <= 0]
        for url in unused:
            del _users[url]
        closing = [_listeners.pop(url) for url in unused if url in _listeners]
    for listener in closing:
        listener.close()
    return unused


def _after_fork_in_child() -> None:
    global _listeners_lock
    # The parent's listener threads do not exist here, and its connections
    # are its own: this process subscribes afresh when it first waits.
    _listeners.clear()
    _listeners_lock = threading.Lock()
    # The backends the parent opened are this process's too (forked objects).


_lifecycle.on_fork("redis", after_in_child=_after_fork_in_child)
