"""Notifications for callbacks: one pub/sub connection and thread per server node, per process.

A blocking ``wait()`` does not come here: it reads its own inbox
(``_inbox``).  The listener serves rawlink() callbacks, and through them
the asyncio and gevent waits (``_linkable.wait_async_by_link``,
``_cooperative.wait_linked``): each registers a wakeup under its object's
channel, and the listener thread, blocked in a socket read on the node's
pub/sub connection, calls it when a ``set()`` anywhere publishes there,
with the generation the message carries (``Wakeup``): one newer than the
state the waiter read means set, anything else that it must look again.
While anyone is subscribed, the read also ends every ``RECHECK`` seconds
to ``TICK`` them all; with nobody subscribed it has no timeout, so an idle
listener never wakes.

No lost wakeup: a waiter subscribes, and waits for the server to confirm
the subscription, *before* it reads the state; a set() after that read
publishes after the subscription, so its message arrives.

The callbacks run on the listener thread, which is this backend's hub.
When the connection drops (server restart), redis-py reconnects and
subscribes again; every local waiter is woken to re-read its state, since
a message sent meanwhile is lost.  When a cluster moves a slot to another
node, the old node ends the subscriptions of its channels; their waiters
are told (``MOVED``) and subscribe again on the new owner before they look
again.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable

import redis

from .. import _lifecycle
from ._pubsub import MOVED, RECHECK, TICK, Notice, Recent, Subscriber, confirmation_missing

# Called on the listener thread with a notice's generation (see _pubsub:
# a set()'s number, None, MOVED), or TICK every RECHECK seconds while
# anyone is subscribed.
Wakeup = Callable[[int | None], object]
IDLE_KEPT = 256  # channels kept subscribed with nobody waiting, most recent first
__all__ = ["MOVED", "TICK", "Listener", "close_listeners", "listener_for", "use_listeners"]


class Listener:
    """The pub/sub connection of one node, its thread and its subscribers."""

    def __init__(self, node_url: str) -> None:
        self.subscriber = Subscriber(node_url)
        self._lock = threading.Lock()
        self._wakeups: dict[str, list[Wakeup]] = {}  # channel -> registered wakeups
        self._confirmed: dict[str, threading.Event] = {}  # channel -> subscription acked
        self._idle = Recent(IDLE_KEPT)
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
            self._idle.forget(channel)
            confirmed = self._confirmed.get(channel)
            first = confirmed is None
            if first:
                confirmed = self._confirmed[channel] = threading.Event()
        if first:
            try:
                self.subscriber.ask([channel])
            except BaseException:
                self._abandon(channel, wakeup)
                raise
            self._start()
        assert confirmed is not None
        if not confirmed.wait(timeout):
            self._abandon(channel, wakeup)
            raise confirmation_missing(timeout)

    def _abandon(self, channel: str, wakeup: Wakeup) -> None:
        """A subscription that failed: forget it wholly, so the next try sends it again."""
        with self._lock:
            listeners = self._wakeups.get(channel, [])
            if wakeup in listeners:
                listeners.remove(wakeup)
            if not listeners:
                self._wakeups.pop(channel, None)
                self._confirmed.pop(channel, None)
                self._idle.forget(channel)

    def unsubscribe(self, channel: str, wakeup: Wakeup) -> None:
        """Forget *wakeup*.

        A channel nobody waits on stays subscribed, among the IDLE_KEPT most
        recently used, so the next wait on it costs no round trip; older
        ones are unsubscribed.
        """
        with self._lock:
            listeners = self._wakeups.get(channel, [])
            if wakeup in listeners:
                listeners.remove(wakeup)
            if listeners:
                return
            self._idle.use(channel)
            evicted = [old for old in self._idle.evict() if not self._wakeups.get(old)]
            for old in evicted:
                self._wakeups.pop(old, None)
                self._confirmed.pop(old, None)
        if evicted:
            with contextlib.suppress(redis.ConnectionError, OSError):  # gone with it anyway
                self.subscriber.leave(evicted)

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
        ticked = time.monotonic()
        while os.getpid() == pid and not self._closed:
            try:
                # Someone waits: wake each RECHECK seconds to TICK them;
                # nobody: a blocking read, so an idle listener never wakes.
                notices = self.subscriber.read(RECHECK if self.subscribers() else None)
            except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
                if self._closed:
                    return
                self._wake_all(None)  # a publication may have been lost: everyone looks again
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                self._resubscribe()
                continue
            backoff = 0.05
            # Every RECHECK seconds, however busy: a claimed result whose
            # lease lapsed announces nothing until someone looks (_scripts).
            if not notices or time.monotonic() - ticked >= RECHECK:
                ticked = time.monotonic()
                self._wake_all(TICK)
            for notice in notices:
                self._dispatch(notice)

    def close(self) -> None:
        """Stop the thread and drop the connection; waiters look again and fail."""
        self._closed = True
        thread = self._thread
        self.subscriber.shut()  # ends the blocked read
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.subscriber.close()
        self._wake_all(None)

    def _resubscribe(self) -> None:
        with self._lock:
            channels = list(self._wakeups)
            for channel in channels:
                self._confirmed[channel] = threading.Event()
        with contextlib.suppress(redis.ConnectionError, OSError):
            self.subscriber.ask(channels)  # if it fails, the next read fails and brings us back

    def _dispatch(self, notice: Notice) -> None:
        channel = notice.channel
        with self._lock:
            if notice.generation == MOVED:
                if notice.asked or channel not in self._wakeups:
                    return  # ours: we unsubscribe only channels nobody waits on
                # The node gave the slot away.  Its waiters move with it.
                wakeups = self._wakeups.pop(channel)
                self._confirmed.pop(channel, None)
                self._idle.forget(channel)
            else:
                if notice.kind == "ssubscribe":
                    confirmed = self._confirmed.get(channel)
                    if confirmed is not None:
                        confirmed.set()
                wakeups = list(self._wakeups.get(channel, []))
        for wakeup in wakeups:
            wakeup(notice.generation)

    def _wake_all(self, generation: int | None) -> None:
        with self._lock:
            wakeups = [wakeup for listeners in self._wakeups.values() for wakeup in listeners]
        for wakeup in wakeups:
            wakeup(generation)


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
