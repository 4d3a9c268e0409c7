"""Broadcast: one set() waking N waiting processes, beside multiprocessing.Event."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final

from ...event import Event
from ...shm import _native
from ._common import (
    CTX,
    Figure,
    print_rows,
)

# --- the floor: one word, one FUTEX_WAKE --------------------------------------


class FutexWord:
    """The floor of a broadcast: every waiter sleeps on one shared 32-bit word,
    and set() wakes them all with one ``FUTEX_WAKE`` (through ctypes, so
    Python's cost per call is in it, as it is in the peers).

    Shared with forked children only (an anonymous shared mapping): enough
    for the benchmark, which forks its waiters.
    """

    _FUTEX_WAIT, _FUTEX_WAKE = 0, 1
    _SYS_FUTEX: Final = MappingProxyType({"x86_64": 202, "aarch64": 98})

    def __init__(self) -> None:
        import ctypes
        import mmap
        import platform

        self._map = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED | MAP_ANONYMOUS
        self._word = ctypes.c_uint32.from_buffer(self._map)
        self._address = ctypes.addressof(self._word)
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._number = self._SYS_FUTEX[platform.machine()]

    def set(self) -> None:
        self._word.value = 1
        self._syscall(self._number, self._address, self._FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)

    def clear(self) -> None:
        self._word.value = 0

    def wait(self) -> bool:
        while self._word.value == 0:
            self._syscall(self._number, self._address, self._FUTEX_WAIT, 0, None, None, 0)
        return True


# --- broadcast -----------------------------------------------------------------


def _broadcast_waiter(
    go: tuple[Any, Any],
    flags: tuple[Any, Any, Any],
    stamps: Any,
    me: int,
    rounds: int,
    spin: int | None = None,
) -> None:
    ready, done, proceed = flags
    if spin is not None:
        _native.set_spin_limit(spin)
    for event in go:  # a raw pub/sub channel subscribes before it says it is ready
        getattr(event, "prepare", lambda: None)()
    for r in range(rounds):
        event = go[r % 2]
        ready.set()
        event.wait()
        stamps[me] = time.perf_counter()
        done.set()
        # The next wait starts once the round is over: what a wait does
        # before it blocks (on a server, a round trip) is not a wakeup.
        proceed.wait(60)
        proceed.clear()


def broadcast_round(
    make: Callable[[], Any],
    waiters: int,
    rounds: int,
    ctx: Any = CTX,
    spin: int | None = None,
    settle: float = 0.0002,
) -> float:
    """Median seconds from one set() to the last of *waiters* processes running.

    *spin*: the waiters' spin limit (None: as configured).  *settle*: seconds
    per waiter that the setter lets pass, once all are about to wait, before
    it sets: a wait that has not blocked by then sees the flag up instead
    of being woken, and its start, not the wakeup, is measured.
    """
    go = (make(), make())  # rounds alternate, so a round never sees the last one's set
    ready = [ctx.Event() for _ in range(waiters)]
    done = [ctx.Event() for _ in range(waiters)]
    proceed = [ctx.Event() for _ in range(waiters)]
    stamps = ctx.Array("d", waiters, lock=False)
    children = [
        ctx.Process(
            target=_broadcast_waiter,
            args=(go, (ready[i], done[i], proceed[i]), stamps, i, rounds, spin),
        )
        for i in range(waiters)
    ]
    for child in children:
        child.start()
    samples: list[float] = []
    try:
        for r in range(rounds):
            for flag in ready:
                flag.wait(60)
                flag.clear()
            time.sleep(0.002 + settle * waiters)  # let every waiter block
            start = time.perf_counter()
            go[r % 2].set()
            for flag in done:
                flag.wait(60)
                flag.clear()
            go[r % 2].clear()
            samples.append(float(max(stamps)) - start)
            for flag in proceed:
                flag.set()
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    return Figure(samples[1:] or samples)


BROADCAST_SIZES = [1, 2, 4, 8, 16, 32, 64]
QUICK_BROADCAST_SIZES = [1, 4, 16]


def broadcast(sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """Per N: median seconds until the last of N blocked processes runs, per peer."""
    peers: dict[str, tuple[Callable[[], Any], int | None]] = {
        "mpevent.Event": (Event, None),
        "mpevent.Event, no spin": (Event, 0),  # MPEVENT_SPIN=0 in the waiters
        "multiprocessing.Event": (CTX.Event, None),
        "floor: one futex word": (FutexWord, None),
    }
    table: dict[str, dict[str, float]] = {}
    for waiters in sizes:
        row: dict[str, float] = {}
        for trial in range(2):  # peers alternate within the row
            order = list(peers) if trial % 2 == 0 else list(reversed(peers))
            for name in order:
                make, spin = peers[name]
                seconds = broadcast_round(make, waiters, max(3, rounds // 2), spin=spin)
                row[name] = min(row.get(name, seconds), seconds) if trial else seconds
        table[f"{waiters} waiters"] = row
    return table


def report_broadcast(sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    table = broadcast(sizes, rounds)
    title = "broadcast: one set() to the last of N blocked processes running, median (fork)"
    print_rows(title, table, "multiprocessing.Event", 11)
    return table
