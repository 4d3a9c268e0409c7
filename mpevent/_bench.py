"""Measurements of mpevent beside its peers, shared by the demo and benchmarks/.

Ping-pong: A sets e1 and waits on e2; B waits on e1, clears it and sets e2;
A clears e2.  The peers run interleaved, trial by trial, so the rows of one
run see the same machine; compare ratios within a run, not across runs.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from typing import Any

from .event import Event

CTX = mp.get_context("fork")


def _event_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def _event_round_trips(make: Callable[[], Any], rounds: int) -> float:
    ping, pong = make(), make()
    peer = CTX.Process(target=_event_peer, args=(ping, pong, rounds + 200))
    peer.start()
    try:
        for _ in range(200):  # warm up both sides
            ping.set()
            pong.wait()
            pong.clear()
        start = time.perf_counter()
        for _ in range(rounds):
            ping.set()
            pong.wait()
            pong.clear()
        return (time.perf_counter() - start) / rounds
    finally:
        peer.join(30)
        if peer.is_alive():
            peer.kill()


def _semaphore_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.acquire()
        pong.release()


def _semaphore_round_trips(rounds: int) -> float:
    ping, pong = CTX.Semaphore(0), CTX.Semaphore(0)
    peer = CTX.Process(target=_semaphore_peer, args=(ping, pong, rounds + 200))
    peer.start()
    try:
        for _ in range(200):
            ping.release()
            pong.acquire()
        start = time.perf_counter()
        for _ in range(rounds):
            ping.release()
            pong.acquire()
        return (time.perf_counter() - start) / rounds
    finally:
        peer.join(30)
        if peer.is_alive():
            peer.kill()


def ping_pong(rounds: int, trials: int) -> dict[str, float]:
    """Median seconds per round trip of each peer, trials interleaved."""
    peers: dict[str, Callable[[], float]] = {
        "raw semaphore pair": lambda: _semaphore_round_trips(rounds),
        "mpevent.Event": lambda: _event_round_trips(Event, rounds),
        "multiprocessing.Event": lambda: _event_round_trips(CTX.Event, rounds),
    }
    samples: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(trials):
        for name, run in peers.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def creation(count: int) -> float:
    """Seconds to create *count* Events (kept alive until the end)."""
    start = time.perf_counter()
    events = [Event() for _ in range(count)]
    elapsed = time.perf_counter() - start
    del events
    return elapsed


def report_ping_pong(rounds: int, trials: int) -> dict[str, float]:
    """Run ping_pong() and print its rows with their ratios."""
    results = ping_pong(rounds, trials)
    base = results["raw semaphore pair"]
    print(f"ping-pong round trip, median of {trials} x {rounds} (fork, 2 processes)")
    for name, seconds in results.items():
        print(f"  {name:24s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x raw semaphores")
    mp_ratio = results["multiprocessing.Event"] / results["mpevent.Event"]
    print(f"  mpevent.Event is {mp_ratio:.1f}x faster than multiprocessing.Event")
    return results


def report_creation(count: int) -> float:
    seconds = creation(count)
    print(f"create {count:,} Events: {seconds:.2f} s ({seconds / count * 1e6:.2f} us each)")
    return seconds
