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
    woke = go.wait(30)
    # time.perf_counter is CLOCK_MONOTONIC on Linux: one clock for every
    # process of the machine, so the parent can subtract its set() time.
    woke_at = time.perf_counter()
    answer.set(
        {
            "worker": number,
            "pid": os.getpid(),
            "woke": woke,
            "woke_at": woke_at,
            "payload": bytes(number * 1_000_000),
        }
    )


def _wait_until_blocked(event: Event, count: int, timeout: float) -> bool:
    """Wait until *count* waiters sleep on *event* (its record's statistics)."""
    deadline = time.monotonic() + timeout
    while event._record.info()["waiters"] < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def show(workers: int = 4) -> bool:
    """Events and AsyncResults crossing spawn'ed processes; True if every worker exited 0.

    Each worker's line is the time from the parent's set() to its wakeup.
    Only this process prints, so no two processes' lines run into each other.
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
        blocked = _wait_until_blocked(go, workers, 60)
        print(f"parent: {workers if blocked else 'not all'} workers blocked in wait(); set()")
        set_at = time.perf_counter()
        go.set()
        got = [answer.get(timeout=60) for answer in answers]
        for one in sorted(got, key=lambda one: one["woke_at"]):
            print(
                f"  worker {one['worker']} (pid {one['pid']}): wait() -> {one['woke']}, "
                f"{(one['woke_at'] - set_at) * 1e6:,.0f} us after set()"
            )
        for one in got:
            print(
                f"parent: AsyncResult from worker {one['worker']} (pid {one['pid']}) "
                f"with {len(one['payload']):,} bytes"
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
    return codes == [0] * workers


def run(workers: int = 4, rounds: int = 2000, trials: int = 3, out: str = ".") -> int:
    """The demo (show()), then quick benchmarks.

    The benchmarks' figures go to *out*/mpevent-bench.json and their plot
    to *out*/mpevent-bench.png (with matplotlib).
    """
    shown = show(workers)
    print("quick benchmarks (every row: python -m mpevent bench; see docs/results.md)\n")
    os.makedirs(out, exist_ok=True)
    benchrun.run(
        {
            "ping_pong": lambda: bench.report_ping_pong(rounds, trials),
            "values": lambda: bench.report_value_handoff(
                count=40, trials=1, sizes=bench.QUICK_VALUE_SIZES
            ),
            # Values to receivers parked for milliseconds, with what each
            # handoff costs each side (faults, CPU) in the JSON.
            "parked": lambda: bench.report_parked_handoff(
                10, [100, 64 << 10, 1 << 20], shapes=("per peer",)
            ),
            "wakeups": lambda: bench.report_wakeup_latency(count=100, trials=1),
            "creation": lambda: {"seconds": bench.report_creation(100_000)},
        },
        os.path.abspath(os.path.join(out, "mpevent-bench.json")),
        os.path.abspath(os.path.join(out, "mpevent-bench.png")),
    )
    return 0 if shown else 1
