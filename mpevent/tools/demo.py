"""The demo: processes wait on one Event and answer through AsyncResults; benchmarks."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from ..asyncresult import AsyncResult
from ..event import Event
from . import bench, benchrun


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


def run(workers: int = 4, rounds: int = 2000, trials: int = 3, out: str = ".") -> int:
    """Show Events and AsyncResults crossing spawn'ed processes, then quick benchmarks.

    The benchmarks' figures go to *out*/mpevent-bench.json and their plot
    to *out*/mpevent-bench.png (with matplotlib).
    """
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
    print("quick benchmarks (every row: python -m mpevent bench; see docs/results.md)\n")
    os.makedirs(out, exist_ok=True)
    benchrun.run(
        {
            "ping_pong": lambda: bench.report_ping_pong(rounds, trials),
            "values": lambda: bench.report_value_handoff(
                count=40, trials=1, sizes=bench.QUICK_VALUE_SIZES
            ),
            "wakeups": lambda: bench.report_wakeup_latency(count=100, trials=1),
            "creation": lambda: {"seconds": bench.report_creation(100_000)},
        },
        os.path.abspath(os.path.join(out, "mpevent-bench.json")),
        os.path.abspath(os.path.join(out, "mpevent-bench.png")),
    )
    return 0 if codes == [0] * workers else 1
