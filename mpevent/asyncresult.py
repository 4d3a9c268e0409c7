"""AsyncResult: a value or an exception, set once by any process, read by all."""

from __future__ import annotations

import concurrent.futures
from typing import Any, Final

from . import _base, _serial
from ._interface import EITHER, EXCEPTION, VALUE
from ._linkable import Linkable

KIND_ASYNC_RESULT: Final = 2


class Timeout(TimeoutError):
    """Raised by AsyncResult.get() on timeout and by get_nowait() when not ready."""


class Claim:
    """A promise to set an AsyncResult (what :meth:`AsyncResult.claim` returns).

    As a context manager: ``__enter__`` gives the result, and an exception
    escaping the block is stored in the result (if nothing is stored yet)
    before it propagates.
    """

    __slots__ = ("result",)

    def __init__(self, result: AsyncResult) -> None:
        self.result = result

    def __enter__(self) -> AsyncResult:
        return self.result

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if isinstance(exc, Exception) and not self.result.ready():
            self.result.set_exception(exc)


class AsyncResult(Linkable):
    """A one-time value or exception shared by processes (gevent.event.AsyncResult).

    ``set()`` / ``set_exception()`` in any process wakes every thread of
    every process blocked in ``get()`` / ``wait()``.  Values are pickled
    (protocol 5) and stored once; large buffers (bytes, NumPy arrays) are
    copied in once, out of band.  ``mpevent.AsyncResult()`` keeps them in
    this machine's shared-memory heap, and NumPy arrays come back *without
    a copy*: read-only arrays on the shared pages, valid for as long as the
    reader holds them, even after the result is set again, dropped
    everywhere else, or its setter dies (``get(copy=True)`` gives a private
    writable copy).  ``mpevent.connect(url).AsyncResult()`` keeps them,
    signed, on a Redis server.  As in gevent, setting again replaces what
    was stored and wakes the waiters again, and a stored value wins over a
    stored exception in ``get()``.  Named objects as for :class:`Event`.
    """

    __slots__ = ()
    _KIND = KIND_ASYNC_RESULT
    _PUBLIC = "AsyncResult"
    # The objects rebuilt from the stored generation, by slot (see _load).
    _cache: tuple[int, dict[int, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is AsyncResult:
            # mpevent.AsyncResult() itself: the default backend's class.
            implementation = _base.default().AsyncResult
            return implementation.__new__(implementation)
        return super().__new__(cls)

    def _init_local(self) -> None:
        self._cache = (-1, {})

    # --- setting ----------------------------------------------------------

    def set(self, value: Any = None) -> None:
        """Store *value* and wake every waiter.

        Raises TypeError naming the type if *value* cannot be pickled, and
        MemoryError (what ran out, how to fix it) if shared memory or the
        ``MPEVENT_MAX_SHM`` cap has no room for it; the result is then left
        as it was.
        """
        inband, buffers = _serial.dumps(value)
        self._record.store(VALUE, inband, buffers)

    set_result = set

    def set_exception(
        self, exception: BaseException | type[BaseException], exc_info: Any = None
    ) -> None:
        """Store *exception* (an instance or a class) and wake every waiter.

        Its traceback travels as text, chained as ``__cause__`` when raised
        elsewhere; an exception that cannot be pickled arrives as
        :class:`mpevent.RemoteException`.
        """
        if isinstance(exception, type) and issubclass(exception, BaseException):
            instance = exception()
        elif isinstance(exception, BaseException):
            instance = exception
        else:
            raise TypeError(
                "set_exception() needs an exception instance or class, "
                f"not {type(exception).__qualname__!r}"
            )
        if exc_info and exc_info[1] is instance and exc_info[2] is not None:
            instance = instance.with_traceback(exc_info[2])
        inband, buffers = _serial.dump_exception(instance)
        self._record.store(EXCEPTION, inband, buffers)

    def __call__(self, source: Any) -> None:
        """Take the outcome of *source*, so this result can be a link target.

        *source* is a :class:`concurrent.futures.Future` (so
        ``future.add_done_callback(result)`` works), another AsyncResult,
        or anything gevent-Greenlet-like (``successful()``, ``value``,
        ``exception``).
        """
        if isinstance(source, concurrent.futures.Future):
            if source.cancelled():
                self.set_exception(concurrent.futures.CancelledError())
            elif source.exception() is not None:
                self.set_exception(source.exception())  # type: ignore[arg-type]
            else:
                self.set(source.result())
        elif source.successful():
            self.set(source.value)
        else:
            self.set_exception(source.exception, getattr(source, "exc_info", None))

    # --- reading ----------------------------------------------------------

    def claim(self) -> Claim:
        """Promise that this process sets the result.

        If this process then dies without setting it -- SIGKILL, the OOM
        killer, a crash, or an exit -- every ``get()``, ``wait()``,
        ``mpevent.wait()``, ``rawlink`` callback and ``get_async()``, in
        every process, ends within about a second, and they and all later
        readers see :class:`~mpevent.ProcessDied` as the stored exception.

        The promise is made at once and lasts until the result is set or
        this process ends.  What it returns is also a context manager: an
        exception escaping the block is stored with :meth:`set_exception`
        (and re-raised), as gevent's ``greenlet.link(result)`` does::

            with result.claim():
                result.set(work())

        On a Redis server the promise is a lease that a thread of this
        process renews (``lease=`` in the URL, 3 s by default): a death is
        seen within the lease plus about a second, and a claimer cut off
        from the server for longer than the lease is taken for dead -- its
        own ``set()`` then raises :class:`~mpevent.ClaimLost` and stores
        nothing.  Closing the backend fails its unset claims, as an exit does.

        Raises ValueError if the result is set already or claimed by a live
        process (one process promises it), and on a closed handle.
        """
        self._record.claim()
        return Claim(self)

    def successful(self) -> bool:
        """Return true if and only if it is ready and holds a value."""
        return bool(self._record.holds(VALUE))

    @property
    def value(self) -> Any:
        """The value passed to set(), or None."""
        return self._load(VALUE)[1]

    @property
    def exception(self) -> BaseException | None:
        """The exception passed to set_exception(), or None."""
        exception: BaseException | None = self._load(EXCEPTION)[1]
        return exception

    @property
    def exc_info(self) -> tuple[Any, ...]:
        """(type, exception, None) if an exception is stored, else ()."""
        exception = self.exception
        return () if exception is None else (type(exception), exception, None)

    def get(self, block: bool = True, timeout: float | None = None, *, copy: bool = False) -> Any:
        """Return the stored value or raise the stored exception.

        If nothing is stored yet: with *block* false raise :class:`Timeout`
        at once, else wait up to *timeout* seconds (None: forever) and raise
        :class:`Timeout` if nothing arrives.  Large NumPy arrays are
        read-only views of shared memory; with *copy* true they (and every
        other buffer of the value) are private, writable copies.
        """
        slot, outcome = self._load(EITHER, copy)
        if slot < 0:
            if not block:
                raise Timeout("AsyncResult holds no value or exception yet")
            if not self._wait_ready(timeout):
                raise Timeout(f"AsyncResult.get() timed out after {timeout} s")
            slot, outcome = self._load(EITHER, copy, woken=True)
        if slot == VALUE:
            return outcome
        if slot < 0:  # cannot happen: nothing empties a slot once filled
            raise Timeout("AsyncResult.get() was woken but found nothing stored")
        raise outcome

    def get_nowait(self) -> Any:
        """Return the value or raise the exception; :class:`Timeout` if not ready."""
        return self.get(block=False)

    def result(self, timeout: float | None = None) -> Any:
        return self.get(timeout=timeout)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until ready or *timeout*; return the value (None on exception or timeout)."""
        self._wait_ready(timeout)
        return self.value

    async def get_async(self, timeout: float | None = None) -> Any:
        """Await the value (or raise the exception) without blocking the loop.

        Raises :class:`Timeout` if nothing arrives within *timeout* seconds.
        """
        if not await self._wait_ready_async(timeout):
            raise Timeout(f"AsyncResult.get_async() timed out after {timeout} s")
        return self.get(block=False)

    async def wait_async(self, timeout: float | None = None) -> Any:
        """Await readiness without blocking the loop; return the value (or None)."""
        await self._wait_ready_async(timeout)
        return self.value

    def done(self) -> bool:
        return self.ready()

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def _load(self, which: int, copy: bool = False, woken: bool = False) -> tuple[int, Any]:
        """(slot, object) of slot *which* (or EITHER), read now; slot -1 if empty.

        *woken*: right after a wait that returned True (see RecordBackend.load).

        Rebuilt once per stored generation: like gevent, repeated reads
        return the same object, and a 32 MiB value is not fetched again.
        A private copy is the caller's own, never cached.
        """
        generation, objects = self._cache
        known = -1 if copy else generation
        now, slot, loaded = self._record.load(which, copy, known, woken)
        if slot < 0:
            return -1, None
        if now == known:
            if slot in objects:
                return slot, objects[slot]
            # The same generation, but only the other slot was read yet.
            now, slot, loaded = self._record.load(slot, copy)
        if slot == EXCEPTION:
            loaded = _serial.as_exception(loaded)
        if not copy:
            if now != generation:
                self._cache = (now, {})
            self._cache[1][slot] = loaded
        return slot, loaded

    def _state_text(self) -> str:
        if self.successful():
            return f"value={self.value!r}"
        if self.ready():
            return f"exception={self.exception!r}"
        return "unset"
