"""RedisRecord: one object on a Redis server, behind the interface the public classes use.

Every operation is one atomic step (``_scripts``), so one round trip to the
one node that holds the object (two to read a frame over 256 KiB).  Waiting
subscribes to the object's channel first and reads the state second
(``_inbox``), so no set() is missed; a waiter returns True when the
generation moved, as in shared memory.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import redis

from .. import _callbacks, _cooperative, _serial
from .._errors import CLAIMER_TRACEBACK, BackendUnavailable, ClaimLost
from .._interface import EITHER, EXCEPTION, VALUE
from .._linkable import wait_async_by_link
from . import _inbox, _leases, _scripts, _values
from ._listener import listener_for
from ._pubsub import MOVED, TICK
from ._waiting import Waiting

if TYPE_CHECKING:
    from ._backend import RedisBackend


class State(NamedTuple):
    kind: int
    generation: int
    flag: bool
    holds: tuple[bool, bool]
    claimed: bool = False  # claimed and unset: a waiter looks at it every RECHECK


class RedisReference(NamedTuple):
    """What a pickled handle carries: where and what, never a secret."""

    url: str  # without the password
    name: str
    kind: int


class RedisRecord:
    """One object on the server; the same methods as the shared-memory Record."""

    def __init__(self, backend: RedisBackend, name: str, kind: int) -> None:
        self.backend = backend
        self.name = name
        self.kind = kind
        prefix = backend.settings.prefix
        self.key = f"{prefix}:{{{name}}}"  # the braces: one cluster slot per object
        self.channel = f"{self.key}:set"
        self.lease = f"{self.key}:claim"  # a claim's lease (_leases), in the same slot
        self.keys = [self.key, self.channel, self.lease]
        # (handle, callback, wakeup) per rawlink(); callbacks compare by ==, as
        # bound methods are new objects at each attribute access.
        self._links: list[tuple[Any, Callable[[Any], object], Callable[[int | None], object]]] = []
        self._links_lock = threading.Lock()
        # When this handle must refresh the TTL again (time.monotonic()); see
        # _scripts: at most every REFRESH_FRACTION of the TTL.
        self._refresh_due = 0.0

    # --- lifecycle -------------------------------------------------------

    def create(self) -> bool:
        """Create the object on the server; False if the name is taken."""
        return bool(self._run(_scripts.CREATE, [self.key], [self.kind], refresh=True))

    def state(self) -> State:
        def read(expiry: int) -> list[Any] | None:
            if not expiry:
                got = self._hmget("kind", "gen", "flag", "h0", "h1", "claim")  # no script
                if got[0] is None or got[5] is None:  # every object has a kind
                    return None if got[0] is None else got
            # A refresh is due, or a claim to look at (its lease may be gone:
            # lapse in _scripts): the script does it and reads.
            return self.backend.run(_scripts.STATE, self.keys, [expiry])  # type: ignore[no-any-return]

        got = self._with_expiry(read)
        if got is None:
            raise LookupError(
                f"mpevent object {self.name!r} no longer exists on {self.backend.settings.public}: "
                "it was removed (remove_name, FLUSHDB), evicted by the server "
                "(a maxmemory-policy other than noeviction), or expired after being unused "
                "for its TTL"
            )
        kind, generation, flag, h0, h1, claim = got
        return State(
            int(kind or 0),
            int(generation or 0),
            flag == b"1",
            (h0 is not None, h1 is not None),
            claim is not None,
        )

    def reference(self) -> RedisReference:
        return RedisReference(self.backend.settings.public, self.name, self.kind)

    def release(self) -> None:
        """Nothing to give back: the server expires objects nobody uses."""

    # --- the backend interface ---------------------------------------------

    def is_set(self) -> bool:
        return self.state().flag

    def set(self) -> None:
        self._expect(self._run(_scripts.SET, [self.key, self.channel], []))

    def clear(self) -> None:
        self._expect(self._run(_scripts.CLEAR, [self.key], []))

    def holds(self, which: int) -> bool:
        return self.state().holds[which]

    def store(self, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
        size = _serial.frame_size(inband, buffers)
        largest = self.backend.connection.largest_value
        if size > largest:
            raise MemoryError(
                f"a value of {size} bytes is larger than the Redis server at "
                f"{self.backend.settings.public} accepts (proto-max-bulk-len {largest} bytes); "
                "nothing was sent or changed. Raise proto-max-bulk-len on the server, or pass "
                "the value another way (a file, shared memory) and its name here"
            )
        frame = bytearray(size)
        _serial.write_frame(memoryview(frame), inband, buffers)
        signature = _values.sign(self.backend.settings.authkey, self.key, which, frame)
        claimer = _leases.claimed(self)  # our token if we claimed it: refusable (_scripts)
        if size <= _values.CARRIED_MAX or claimer or not self.backend.connection.scripted_multi:
            # The frame is sent, not copied.
            args = [which, memoryview(frame), signature, _values.CARRIED_MAX, claimer]
            done = self._run(_scripts.STORE, self.keys, args)
            if claimer:
                _leases.drop(self)
            if done == -2:
                raise ClaimLost(
                    f"this process's claim on AsyncResult {self.name!r} on "
                    f"{self.backend.settings.public} lapsed before this set: its lease of "
                    f"{self.backend.settings.lease_ms / 1000:g} s ran out unrenewed (the "
                    "process was paused, or could not reach the server, for longer). Every "
                    "reader was told ProcessDied, and that stays; nothing was stored. A "
                    "longer lease (the URL's lease= parameter) rides out longer pauses"
                )
            self._expect(done)
            return
        # Too large to carry: a plain HSET and STORED in one MULTI (_scripts).
        client = self.backend.connection.client

        def transaction(expiry: int) -> Any:
            pipe = client.pipeline(transaction=True)
            pipe.hset(self.key, mapping={f"v{which}": memoryview(frame), f"s{which}": signature})
            pipe.eval(_scripts.STORED, 3, *self.keys, expiry, which)
            return pipe.execute()[-1]

        self._expect(
            self._with_expiry(
                lambda expiry: self.backend.connection.call(lambda: transaction(expiry))
            )
        )

    def load(
        self, which: int, copy: bool = False, known: int = -1, woken: bool = False
    ) -> tuple[int, int, object]:
        """(generation, slot, object) of slot *which* or EITHER: one round trip (see _fetch).

        *woken* (this thread's wait on the record just returned True): a
        value that the waking message carried is used, with no round trip.
        The object is unpickled only if its HMAC matches (PermissionError
        otherwise: nothing is run; a carried value that does not match is
        read from the server instead).
        """
        authkey = self.backend.settings.authkey
        carried = _values.take_carried(self.key) if woken else None
        if carried is not None:
            generation, slot, signed_frame = carried
            signature, frame = _values.split_carried(signed_frame)
            # EITHER means "the value if any": a carried exception may hide one.
            usable = slot == which or (which == EITHER and slot == VALUE)
            if usable and _values.signed(authkey, self.key, slot, frame, signature):
                if generation == known:
                    return generation, slot, None
                return generation, slot, _serial.read_frame(memoryview(frame), copy)
        generation, slot, found = self._fetch(which, known)
        if found is None:
            return generation, slot, None
        stored, stored_signature = found
        if slot == EXCEPTION and stored_signature == b"" and stored is not None:
            # Written by the server, unsigned and never unpickled: a lapsed or
            # abandoned claim (_scripts).
            return generation, slot, (_leases.failure(stored), CLAIMER_TRACEBACK)
        if stored is None or not _values.signed(authkey, self.key, slot, stored, stored_signature):
            raise PermissionError(
                f"the value of mpevent object {self.name!r} on {self.backend.settings.public} "
                "does not carry a valid signature: it was not stored with this MPEVENT_AUTHKEY "
                "(or was altered on the server); it was not unpickled"
            )
        return generation, slot, _serial.read_frame(memoryview(stored), copy)

    def _fetch(
        self, which: int, known: int
    ) -> tuple[int, int, tuple[bytes | None, bytes | None] | None]:
        """(generation, slot, (frame, signature)) from the server, as LOAD says.

        None for the pair when the slot is empty or the caller holds that
        generation.  A frame over LOAD_INLINE_MAX is read by a plain HMGET
        after LOAD (Lua would copy it in and out), and if it was stored
        again in between, LOAD is asked again for it whole.
        """
        for inline in (_values.LOAD_INLINE_MAX, _values.ANY_SIZE):
            got = self._run(_scripts.LOAD, self.keys, [which, known, inline])
            if got is None:
                self._expect(-1)
            generation, slot = int(got[0] or 0), int(got[1])
            if len(got) < 4:
                return generation, slot, None
            if got[2] is not None or inline == _values.ANY_SIZE:
                return generation, slot, (got[2], got[3])
            large = self._read_large(slot, generation)
            if large is not None:
                return generation, slot, large
        raise AssertionError("unreachable: the last LOAD reads any size")  # pragma: no cover

    def _read_large(self, slot: int, generation: int) -> tuple[bytes, bytes | None] | None:
        """(frame, signature) of *slot*, read together by one HMGET, if the object
        is still at *generation*; else None."""
        now, frame, signature = self._hmget("gen", f"v{slot}", f"s{slot}")
        if now is None or frame is None or int(now) != generation:
            return None
        return frame, signature

    def wait(self, timeout: float | None) -> bool:
        """Block until set or *timeout* passes; True if set (or set and cleared meanwhile)."""
        return bool(self.wait_many([self], timeout))

    @staticmethod
    def wait_many(records: Sequence[RedisRecord], timeout: float | None) -> list[int]:
        """Positions of records seen set, in order, once any is; [] if *timeout* passes first.

        The calling thread reads the set() messages itself, on its own
        connection to each node (``_inbox``).  While the server cannot be
        reached, keeps trying until the deadline (then BackendUnavailable);
        with no timeout, keeps trying and warns once.
        """
        wait = Waiting(records, timeout)
        wait.start()
        with _inbox.counted([record.channel for record in records]):
            while not wait.ready:
                left = wait.left()
                if left is not None and left <= 0:
                    break
                wait.listen(left)
                wait.settle()
        return wait.ready

    def _subscribe_inbox(self, deliver: _inbox.Deliver, keep: Collection[str]) -> str:
        """Subscribe this thread's inbox to the object's channel; the node's URL.

        *keep*: the channels of the whole wait, which stay subscribed.
        """
        connection = self.backend.connection

        def subscribe() -> str:
            url = connection.node_url(self.channel)  # anew each try: see below
            try:
                _inbox.inbox_for(url).subscribe([self.channel], deliver, keep)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                _inbox.drop(url)  # the next try starts with a fresh connection
                connection.refresh_slots()  # the node may serve the slot no more
                raise
            return url

        return connection.call(subscribe)

    def _keep_carried(self, url: str | None, generation: int) -> None:
        """Keep what the message of *generation* carried, for this thread's next load()."""
        if url is None:
            return
        carried = _inbox.inbox_for(url).take_carried(self.channel, generation)
        if carried is not None:
            _values.keep_carried(self.key, generation, *carried)

    @staticmethod
    def wait_in_greenlet(linkables: Sequence[Any], timeout: float | None) -> list[int]:
        """In a greenlet: rawlink() callbacks on the listener thread send a
        gevent async watcher (_cooperative)."""
        return _cooperative.wait_linked(
            linkables, timeout, _cooperative.rawlinked, from_other_thread=True
        )

    async def wait_async(self, handle: Any, timeout: float | None) -> bool:
        """Await a set on the running loop, woken by the listener thread (rawlink)."""
        return await wait_async_by_link(handle, timeout)

    def rawlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        """Run callback(handle) once, on this process's listener thread, after the next set."""
        start = [-1]
        fired = threading.Lock()

        def wakeup(generation: int | None) -> None:
            if generation == MOVED:
                # Not on the listener thread: subscribing waits for another's reply.
                threading.Thread(target=self._relink, args=(wakeup,), daemon=True).start()
                return
            if generation is not None and start[0] != -1 and generation > start[0]:
                moved = True  # a set() after we looked: no read needed
            else:
                try:
                    state = self.state()
                except BackendUnavailable:
                    return
                except LookupError:
                    # Vanished (evicted, flushed, expired): it will never be
                    # set, so the callback runs now, and what it reads raises
                    # the LookupError that says why (wait_async ends alike).
                    moved = generation == TICK
                else:
                    moved = state.flag or state.generation != start[0] != -1
            # Run only if still linked: unlink() may have come while this
            # wakeup was on its way (the listener calls it outside its lock).
            if moved and fired.acquire(False) and self._forget_link(lambda link: link[2] is wakeup):
                _callbacks.run(callback, handle)

        with self._links_lock:
            self._links.append((handle, callback, wakeup))
        self._subscribe(wakeup)
        start[0] = self.state().generation
        wakeup(None)  # set already: at once

    def unlink(self, handle: Any, callback: Callable[[Any], object]) -> None:
        self._forget_link(lambda link: link[0] is handle and link[1] == callback, first=True)

    def unlink_all(self, handle: Any) -> None:
        self._forget_link(lambda link: link[0] is handle)

    def _forget_link(
        self,
        matches: Callable[[tuple[Any, Any, Callable[[int | None], object]]], bool],
        first: bool = False,
    ) -> bool:
        """Remove the links that match (the first only, if *first*); True if any did."""
        with self._links_lock:
            found = [link for link in self._links if matches(link)]
            if first:
                found = found[:1]
            for link in found:
                self._links.remove(link)
        for link in found:
            self._unsubscribe(link[2])
        return bool(found)

    def claim(self) -> None:
        """Promise that this process sets the result: a lease it renews (_leases)."""
        got = self._run(
            _scripts.CLAIM, self.keys, [_leases.token(), self.backend.settings.lease_ms]
        )
        if got == 1:
            _leases.hold(self.backend, self)
            return
        self._expect(got)
        if got == 0:
            raise ValueError("this AsyncResult is set already: only an unset result can be claimed")
        holder = _leases.failure(b"0 " + got)
        raise ValueError(
            f"this AsyncResult is claimed already by a live process (pid {holder.pid} on "
            f"host {holder.host}): one process promises it"
        )

    def abandon(self, token: str) -> None:
        """This process leaves without setting it: fail its claim, as exited."""
        self._expect(self._run(_scripts.ABANDON, self.keys, [token]))

    def info(self) -> dict[str, int]:
        state = self.state()
        return {"kind": state.kind, "flag": int(state.flag), "generation": state.generation}

    # --- plumbing --------------------------------------------------------

    def _run(self, script: str, keys: list[str], args: list[Any], refresh: bool = False) -> Any:
        """Run *script* with the expiry first in its ARGV: the TTL's refresh, when due."""
        return self._with_expiry(
            lambda expiry: self.backend.run(script, keys, [expiry, *args]), refresh
        )

    def _with_expiry(self, call: Callable[[int], _T], refresh: bool = False) -> _T:
        """call(expiry): the expiry in ms to set, or 0 while no refresh is due (_scripts)."""
        now = time.monotonic()
        ttl_ms = self.backend.settings.ttl_ms
        refresh = refresh or now >= self._refresh_due
        got = call(int(ttl_ms * (1 + _scripts.REFRESH_FRACTION)) if refresh else 0)
        if refresh:  # done: the next refresh is due a fraction of the TTL from now
            self._refresh_due = now + ttl_ms / 1000 * _scripts.REFRESH_FRACTION
        return got

    def _hmget(self, *fields: str) -> list[Any]:
        """HMGET of *fields* of the object: a plain read, atomic, no script."""
        connection = self.backend.connection
        return connection.call(lambda: connection.command("HMGET", self.key, *fields))

    def _expect(self, result: int) -> None:
        if result == -1:
            self.state()  # raises LookupError, saying why

    def _subscribe(self, wakeup: Callable[[int | None], object]) -> None:
        connection = self.backend.connection

        def subscribe() -> None:
            listener = listener_for(connection.node_url(self.channel))
            try:
                listener.subscribe(self.channel, wakeup)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                connection.refresh_slots()  # the node may serve the slot no more
                raise

        connection.call(subscribe)

    def _follow_slot(self, subscribe: Callable[[], _T]) -> _T:
        """Run *subscribe* again after the slot moved (the old node dropped us).

        The state read first goes through the cluster client, whose MOVED
        reply refreshes its slot map, so the subscription goes to the
        slot's new owner.  For a rawlink() (the listener) and a wait (the
        inbox) alike.
        """
        self.state()
        return subscribe()

    def _relink(self, wakeup: Callable[[int | None], object]) -> None:
        """A rawlink()'s _follow_slot(), then a look at the state (on its own thread)."""
        try:
            self._follow_slot(lambda: self._subscribe(wakeup))
        except (LookupError, BackendUnavailable):
            return  # the object is gone, or the server: nothing will set it
        wakeup(None)

    def _unsubscribe(self, wakeup: Callable[[int | None], object]) -> None:
        connection = self.backend.connection
        listener_for(connection.node_url(self.channel)).unsubscribe(self.channel, wakeup)


_T = TypeVar("_T")


if TYPE_CHECKING:  # mypy --strict proves that RedisRecord implements the interface
    from .._interface import RecordBackend

    _conforms: type[RecordBackend] = RedisRecord
