"""Threads of one process on mpevent objects: does a second thread add throughput?

Two patterns, each run by one thread and then by two at once (best of
five runs of a fixed number of calls per thread): every thread calling
``is_set()`` on one shared Event, and every thread calling ``set()`` and
``clear()`` on an Event of its own.  Prints calls per second and the ratio
two threads / one.  With the GIL the ratio stays near 1x (the threads take
turns); on a free-threaded build (3.13t, 3.14t) with two CPUs it should
approach 2x.  Run it under each interpreter to compare:

    python benchmarks/threads.py [--calls N]
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import threading
import time
from collections.abc import Callable

import mpevent


def _rate(bodies: list[Callable[[], None]], calls: int) -> float:
    """Calls per second of all *bodies* run at once, each in its own thread."""
    start_line = threading.Barrier(len(bodies) + 1)

    def run(body: Callable[[], None]) -> None:
        start_line.wait()
        body()

    threads = [threading.Thread(target=run, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return calls * len(bodies) / (time.perf_counter() - started)


def _is_set_on(event: mpevent.Event, calls: int) -> Callable[[], None]:
    def body() -> None:
        is_set = event.is_set
        for _ in range(calls):
            is_set()

    return body


def _toggle(event: mpevent.Event, calls: int) -> Callable[[], None]:
    def body() -> None:
        set_, clear = event.set, event.clear
        for _ in range(calls // 2):
            set_()
            clear()

    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400_000, help="calls per thread per run")
    calls = parser.parse_args().calls
    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]} ({build}, GIL {'on' if gil else 'off'})")
    shared = mpevent.Event()
    own = [mpevent.Event(), mpevent.Event()]
    patterns = {
        "is_set() on one shared Event": lambda n: [_is_set_on(shared, calls) for _ in range(n)],
        "set()+clear() on an Event each": lambda n: [_toggle(own[i], calls) for i in range(n)],
    }
    for name, make in patterns.items():
        one = max(_rate(make(1), calls) for _ in range(5))
        two = max(_rate(make(2), calls) for _ in range(5))
        print(
            f"  {name:32s} 1 thread {one / 1e6:6.2f} M/s   2 threads {two / 1e6:6.2f} M/s"
            f"   {two / one:4.2f}x"
        )


if __name__ == "__main__":
    main()
