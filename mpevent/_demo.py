"""The demo: processes wait on one Event and answer through AsyncResults; benchmarks."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from . import _bench
from .asyncresult import AsyncResult
from .event import Event


def _worker(number: int, go: Event, arrived: Event, answer: AsyncResult) -> None:
    arrived.set()
    started = time.perf_counter()
    woke = go.wait(30)
    print(
        f"  worker {number} (pid {os.getpid()}): wait() -> {woke} "
        f"after {time.perf_counter() - started:.3f} s",
        flush=True,
    )
    answer.set({"worker": number, "pid": os.getpid(), "payload": bytes(number * 1_000_000)})


def run(workers: int = 4, rounds: int = 2000, trials: int = 3) -> int:
    """Show Events and AsyncResults crossing spawn'ed processes, then short benchmarks."""
    context = mp.get_context("spawn")
    go = Event()
    arrivals = [Event() for _ in range(workers)]
    answers = [AsyncResult() for _ in range(workers)]
    print(f"parent (pid {os.getpid()}): starting {workers} spawn workers that wait on one Event")
    children = [
        context.Process(target=_worker, args=(n, go, arrived, answer))
        for n, (arrived, answer) in enumerate(zip(arrivals, answers, strict=True))
    ]
    for child in children:
        child.start()
    try:
        for arrived in arrivals:
            arrived.wait(60)
        time.sleep(0.2)  # let the workers reach wait(), to show them blocked
        print("parent: set()", flush=True)
        go.set()
        for answer in answers:
            got = answer.get(timeout=60)
            print(
                f"parent: AsyncResult from worker {got['worker']} (pid {got['pid']}) "
                f"with {len(got['payload']):,} bytes",
                flush=True,
            )
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
    print()
    _bench.report_value_handoff(count=40, trials=1, sizes=_bench.QUICK_VALUE_SIZES)
    print()
    _bench.report_wakeup_latency(count=100, trials=1)
    print()
    _bench.report_creation(100_000)
    return 0 if codes == [0] * workers else 1
