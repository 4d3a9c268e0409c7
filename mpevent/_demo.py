"""The demo: several processes wait on one Event, the parent sets it."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from . import _bench
from .event import Event


def _worker(number: int, go: Event, arrived: Event) -> None:
    arrived.set()
    started = time.perf_counter()
    woke = go.wait(30)
    print(
        f"  worker {number} (pid {os.getpid()}): wait() -> {woke} "
        f"after {time.perf_counter() - started:.3f} s",
        flush=True,
    )


def run(workers: int = 4, rounds: int = 2000, trials: int = 3) -> int:
    """Show an Event crossing spawn'ed processes, then a short benchmark."""
    context = mp.get_context("spawn")
    go = Event()
    arrivals = [Event() for _ in range(workers)]
    print(f"parent (pid {os.getpid()}): starting {workers} spawn workers that wait on one Event")
    children = [
        context.Process(target=_worker, args=(n, go, arrived)) for n, arrived in enumerate(arrivals)
    ]
    for child in children:
        child.start()
    try:
        for arrived in arrivals:
            arrived.wait(60)
        time.sleep(0.2)  # let the workers reach wait(), to show them blocked
        print("parent: set()", flush=True)
        go.set()
        for child in children:
            child.join(60)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    codes = [child.exitcode for child in children]
    print(f"parent: workers exited with {codes}\n")
    _bench.report_ping_pong(rounds, trials)
    _bench.report_creation(100_000)
    return 0 if codes == [0] * workers else 1
