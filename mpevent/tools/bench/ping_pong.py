"""Ping-pong: two processes hand a flag back and forth, beside the stdlib's peers.

A sets e1 and waits on e2; B waits on e1, clears it and sets e2; A clears
e2.  Also on a loaded machine (one busy process per CPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ...event import Event
from ._common import (
    CTX,
    interleaved_rounds,
)


def _event_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def _semaphore_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.acquire()
        pong.release()


def _event_pair(
    make: Callable[[], Any],
) -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping, pong = make(), make()

    def round_trip() -> None:
        ping.set()
        pong.wait()
        pong.clear()

    return _event_peer, ping, pong, round_trip


def _semaphore_pair() -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping, pong = CTX.Semaphore(0), CTX.Semaphore(0)

    def round_trip() -> None:
        ping.release()
        pong.acquire()

    return _semaphore_peer, ping, pong, round_trip


def _spin() -> None:

    os.nice(19)
    while True:
        pass


def ping_pong(rounds: int, trials: int, loaded: bool = False) -> dict[str, float]:
    """Median seconds per round trip of each peer.

    Every peer's partner process runs from start to end; the peers take
    turns in chunks of rounds/20, so all see the same moments of a noisy
    machine.  *trials* scales the number of chunks.  *loaded*: a
    lowest-priority spinner runs on every CPU meanwhile, as on a busy host.
    """

    spinners = [CTX.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    if loaded:
        for spinner in spinners:
            spinner.start()
    try:
        return _ping_pong(rounds, trials)
    finally:
        for spinner in spinners:
            if spinner.pid is not None:
                spinner.kill()
                spinner.join(10)


def _pipe_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.recv_bytes()
        pong.send_bytes(b"")


def _pipe_pair() -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping_in, ping_out = CTX.Pipe(duplex=False)
    pong_in, pong_out = CTX.Pipe(duplex=False)

    def round_trip() -> None:
        ping_out.send_bytes(b"")
        pong_in.recv_bytes()

    return _pipe_peer, ping_in, pong_out, round_trip


def _ping_pong(rounds: int, trials: int) -> dict[str, float]:
    manager = CTX.Manager()  # a server process: its Event is a proxy
    try:
        return _ping_pong_peers(rounds, trials, manager)
    finally:
        manager.shutdown()


def _ping_pong_peers(rounds: int, trials: int, manager: Any) -> dict[str, float]:
    pairs = {
        "raw semaphore pair": _semaphore_pair(),
        "mpevent.Event": _event_pair(Event),
        "multiprocessing.Event": _event_pair(CTX.Event),
        "Manager().Event()": _event_pair(manager.Event),
        "multiprocessing.Pipe pair": _pipe_pair(),
    }
    chunk = max(rounds // 20, 10)
    chunks = 20 * trials
    warmup = 200
    partners = [
        CTX.Process(target=target, args=(ping, pong, warmup + chunk * chunks))
        for target, ping, pong, _ in pairs.values()
    ]
    for partner in partners:
        partner.start()
    try:
        return interleaved_rounds(
            {name: pair[3] for name, pair in pairs.items()}, warmup, chunk, chunks
        )
    finally:
        for partner in partners:
            partner.join(30)
            if partner.is_alive():
                partner.kill()


def report_ping_pong(rounds: int, trials: int) -> dict[str, float]:
    """Run ping_pong() on an idle and on a loaded machine; print both with ratios."""
    results: dict[str, float] = {}
    for loaded in (False, True):
        regime = "loaded (a nice-19 spinner per CPU)" if loaded else "idle"
        table = ping_pong(rounds, trials, loaded)
        base = table["raw semaphore pair"]
        print(f"ping-pong round trip, {regime}, median of {20 * trials} interleaved chunks (fork)")
        for name, seconds in table.items():
            print(f"  {name:24s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x raw semaphores")
        mp_ratio = table["multiprocessing.Event"] / table["mpevent.Event"]
        print(f"  mpevent.Event is {mp_ratio:.1f}x faster than multiprocessing.Event")
        suffix = " (loaded)" if loaded else ""
        results.update({name + suffix: seconds for name, seconds in table.items()})
    return results
