"""A blocking wait on Redis records: what the waiting thread heard, and what it must read again.

``RedisRecord.wait_many`` (``_record``) is a loop over one :class:`Waiting`:
subscribe every channel on the thread's own inboxes (``_inbox``), read the
states, then listen and settle until enough records are ready.  An
unreachable server is ridden out by :class:`Outage` until the deadline.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from .._errors import BackendUnavailable
from . import _inbox, _values
from ._pubsub import MOVED, RECHECK

if TYPE_CHECKING:
    from ._record import RedisRecord, State


class Waiting:
    """One blocking wait on several records: what it heard, and what it must read again.

    No lost wakeup: every channel is subscribed (and confirmed) before the
    states are read; after that a set() announces a newer generation.  A
    vanished object (evicted, flushed, expired) announces nothing, so with
    no message for RECHECK seconds every record not yet ready is read again
    (which raises LookupError for an object that is gone); so is a claimed
    result every RECHECK seconds whatever was heard, since a claim's lease
    that lapses announces nothing until someone looks (``_scripts``).
    Subscriptions
    the wait lost (the slot moved, the backend was closed, the connection
    dropped) are made again, then their records are read.
    """

    def __init__(self, records: Sequence[RedisRecord], timeout: float | None) -> None:
        self.records = records
        self.deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self.heard = [-1] * len(records)  # the highest generation a message announced
        self.unsure: set[int] = set()  # records to read again (no message, or maybe lost)
        self.moved: set[int] = set()  # records whose subscription was lost
        self.channels: dict[str, list[int]] = {}  # channel -> positions of its records
        for i, record in enumerate(records):
            self.channels.setdefault(record.channel, []).append(i)
            _values.take_carried(record.key)  # a stale one, from an earlier wait
        self.nodes: dict[int, str] = {}  # position -> node URL it is subscribed on
        self.outage = Outage(records[0], self.deadline)
        self.starts: list[State] = []
        self.ready: list[int] = []
        self.claimed: set[int] = set()  # claimed results: read every RECHECK
        self.looked = time.monotonic()  # when the claimed ones were last read

    def deliver(self, channel: str, generation: int | None) -> None:
        """What a message on *channel* says to the records waiting on it (``_inbox.Deliver``)."""
        for i in self.channels.get(channel, ()):
            if generation is None:
                self.unsure.add(i)
            elif generation == MOVED:
                self.moved.add(i)
            else:
                self.heard[i] = max(self.heard[i], generation)

    def start(self) -> None:
        """Subscribe every record's channel, then read every state."""
        while True:
            try:
                for i, record in enumerate(self.records):
                    if i not in self.nodes:
                        self.nodes[i] = record._subscribe_inbox(self.deliver, self.channels)
                self.starts = [record.state() for record in self.records]
                break
            except BackendUnavailable as error:
                self.outage.pause(error)
        self.unsure.clear()  # the states were read after every subscription
        self.ready = [i for i, state in enumerate(self.starts) if state.flag]
        self.claimed = {i for i, state in enumerate(self.starts) if state.claimed}
        self.looked = time.monotonic()

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def listen(self, left: float | None) -> None:
        """Read messages for up to RECHECK seconds (or *left*)."""
        self.moved.update(
            i
            for i, url in self.nodes.items()
            if self.records[i].channel not in _inbox.inbox_for(url).subscribed
        )
        inboxes = [_inbox.inbox_for(url) for url in dict.fromkeys(self.nodes.values())]
        try:
            wait = RECHECK if left is None else min(left, RECHECK)
            if not self.moved and not _inbox.pump(inboxes, wait, self.deliver):
                self.unsure.update(i for i in range(len(self.records)) if i not in self.ready)
            if self.claimed and time.monotonic() - self.looked >= RECHECK:
                self.unsure.update(i for i in self.claimed if i not in self.ready)
        except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
            # The connection dropped (a restart): messages may be lost.
            for url in set(self.nodes.values()):
                _inbox.drop(url)
            self.moved.update(range(len(self.records)))

    def settle(self) -> None:
        """Take what the messages said: ready records, new subscriptions, states to read."""
        # A set() after our read announces a newer generation: no read needed.
        newer = [i for i, heard in enumerate(self.heard) if heard > self.starts[i].generation]
        relocate = sorted(self.moved)
        self.moved.clear()
        to_read = [i for i in self.unsure | set(relocate) if i not in newer]
        self.unsure.clear()
        for i in newer:
            if i not in self.ready:
                self.ready.append(i)
                self.records[i]._keep_carried(self.nodes.get(i), self.heard[i])
        try:
            for i in relocate:
                self.nodes.pop(i, None)
                subscribe = functools.partial(
                    self.records[i]._subscribe_inbox, self.deliver, self.channels
                )
                self.nodes[i] = self.records[i]._follow_slot(subscribe)
            if self.claimed & set(to_read):
                self.looked = time.monotonic()
            for i in to_read:
                now = self.records[i].state()
                if not now.claimed:
                    self.claimed.discard(i)
                if i not in self.ready and (
                    now.flag or now.generation != self.starts[i].generation
                ):
                    self.ready.append(i)
        except BackendUnavailable as error:
            self.unsure.update(to_read)
            self.moved.update(i for i in relocate if i not in self.nodes)
            self.outage.pause(error)


class Outage:
    """How a wait rides out a server it cannot reach: retry until its deadline."""

    PAUSE = 0.25

    def __init__(self, record: RedisRecord, deadline: float | None) -> None:
        self.record = record
        self.deadline = deadline
        self.warned = False

    def pause(self, error: BackendUnavailable) -> None:
        """Sleep before the next try; raise *error* when that would pass the deadline."""
        if self.deadline is not None and time.monotonic() + self.PAUSE >= self.deadline:
            raise error
        if self.deadline is None and not self.warned:
            self.warned = True
            warnings.warn(
                f"the Redis server at {self.record.backend.settings.public} cannot be "
                "reached; wait(timeout=None) keeps retrying until it is back",
                RuntimeWarning,
                stacklevel=4,
            )
        time.sleep(self.PAUSE)
