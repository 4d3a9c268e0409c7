"""Claims on Redis, the claimer's side: its token, its leases and the thread that renews them.

A claim on Redis is a lease (``_scripts`` holds the server's side, and
the one rule that fails a result whose lease is gone).  This module keeps
what the claiming process must do for its promise to hold:

* **Renew.**  One thread per process renews every lease it holds, each
  third of the lease, with one pipeline of PEXPIREs per backend.  A lease
  it finds gone has lapsed (the process was paused, or cut off from the
  server, for longer than the lease): the result is failed, or will be at
  its next touch, and this process's ``set()`` of it raises
  :class:`~mpevent.ClaimLost`.  While the server cannot be reached the
  thread keeps trying; it never raises.
* **Release.**  A normal exit, and closing the backend, fail the claims
  still held, as ``exited`` (``ABANDON``), as shared memory does: no one
  would renew them.
* **Fork.**  The parent's claims are the parent's: a child holds none.

A token is ``"<pid> <host> <nonce>"``: the nonce tells apart two processes
of one pid on one host name (containers, pid reuse).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _lifecycle
from .._errors import BackendUnavailable, ProcessDied

if TYPE_CHECKING:
    from ._backend import RedisBackend
    from ._record import RedisRecord

RENEWALS_PER_LEASE = 3  # a lease survives two renewals lost in a row


class Held(NamedTuple):
    backend: RedisBackend
    record: RedisRecord


# (server, lease key) -> what this process claimed, until its set(): two
# servers may hold the same key.
_held: dict[tuple[str, str], Held] = {}
_lapsed: set[tuple[str, str]] = set()  # leases found gone: not renewed any more
_lock = threading.Lock()
_renewing = threading.Condition(_lock)
# Held by the thread while it renews: release() takes it, so a backend about
# to close has no renewal in flight (which would open a connection again).
_in_flight = threading.Lock()
_thread: threading.Thread | None = None
_token: tuple[int, str] = (0, "")


def token() -> str:
    """This process's token: names it in every claim it makes."""
    global _token
    pid = os.getpid()
    if _token[0] != pid:
        _token = (pid, f"{pid} {socket.gethostname()} {secrets.token_hex(6)}")
    return _token[1]


def failure(text: bytes) -> ProcessDied:
    """The ProcessDied that a failure's text (``<exited> <token>``, ``_scripts``) stands for."""
    exited, pid, host = text.decode(errors="replace").split(" ")[:3]
    return ProcessDied(int(pid), exited == "1", host)


def _key(record: RedisRecord) -> tuple[str, str]:
    return record.backend.settings.public, record.lease


def hold(backend: RedisBackend, record: RedisRecord) -> None:
    """*record* is claimed by this process: renew its lease until it is set."""
    global _thread
    _lifecycle.need_exit_hooks()
    with _lock:
        _held[_key(record)] = Held(backend, record)
        _lapsed.discard(_key(record))
        if _thread is None:
            _thread = threading.Thread(target=_renew, name="mpevent-leases", daemon=True)
            _thread.start()
        _renewing.notify()


def claimed(record: RedisRecord) -> str:
    """This process's token if it claimed *record* and has not set it since, else ''."""
    with _lock:
        return token() if _key(record) in _held else ""


def drop(record: RedisRecord) -> None:
    """*record* was set (or its claim refused): nothing to renew or release."""
    with _lock:
        _held.pop(_key(record), None)
        _lapsed.discard(_key(record))


def release(backend: RedisBackend | None = None) -> None:
    """Fail the claims of *backend* (None: every backend) still held: they end unset."""
    with _lock:
        mine = [held for held in _held.values() if backend is None or held.backend is backend]
        for held in mine:
            _lapsed.add(_key(held.record))  # renewed no more
    with _in_flight:
        pass  # a renewal that had them is over
    for held in mine:
        # Gone, or out of reach: the lease lapses on its own.
        with contextlib.suppress(BackendUnavailable, LookupError, MemoryError, PermissionError):
            held.record.abandon(token())
        drop(held.record)


def _renew() -> None:
    """The renewing thread: every third of the shortest lease, renew them all."""
    global _thread
    while True:
        with _lock:
            live = {key: held for key, held in _held.items() if key not in _lapsed}
            if not live:
                _thread = None
                return
            period = min(held.backend.settings.lease_ms for held in live.values())
        with _in_flight:
            _renew_once(live)
        with _lock:
            _renewing.wait(period / 1000 / RENEWALS_PER_LEASE)


def _renew_once(live: dict[tuple[str, str], Held]) -> None:
    """One round: a pipeline of PEXPIREs per backend; the leases found gone have lapsed."""
    by_backend: dict[int, list[tuple[tuple[str, str], Held]]] = {}
    for key, held in live.items():
        by_backend.setdefault(id(held.backend), []).append((key, held))
    for group in by_backend.values():
        backend = group[0][1].backend
        with _lock:  # released meanwhile (a set, a close): not renewed
            keys = [key for key, _ in group if key in _held and key not in _lapsed]
        if not keys:
            continue
        try:
            renew = _pipeline(backend, [lease for _, lease in keys], backend.settings.lease_ms)
            renewed = backend.connection.call(renew)
        except Exception:
            # Out of reach, refused (a cluster's MOVED after a failover),
            # closed: this thread must not die, or every claim of the process
            # would lapse.  Try again next round, with the slot map read anew.
            backend.connection.refresh_slots()
            continue
        with _lock:
            for key, alive in zip(keys, renewed, strict=True):
                if not alive and key in _held:
                    _lapsed.add(key)


def _pipeline(backend: RedisBackend, keys: list[str], lease_ms: int) -> Callable[[], list[Any]]:
    def renew() -> list[Any]:
        pipe = backend.connection.client.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, lease_ms)
        return pipe.execute()  # type: ignore[no-any-return]

    return renew


def _after_fork_in_child() -> None:
    global _lock, _renewing, _in_flight, _thread
    _held.clear()
    _lapsed.clear()
    _lock = threading.Lock()
    _renewing = threading.Condition(_lock)
    _in_flight = threading.Lock()
    _thread = None


_lifecycle.on_fork("leases", after_in_child=_after_fork_in_child)
_lifecycle.at_exit("leases", release)
