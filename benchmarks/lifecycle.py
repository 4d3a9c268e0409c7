"""Lifecycle at scale: N worker processes join, wait, set a result each, and exit.

The program users write: one Event that N forked workers wait on, one
AsyncResult per worker that it sets, then every worker exits.  Beside it,
the same program with ``multiprocessing.Event`` and a ``Pipe`` per worker.
Each phase is timed in the parent:

* start -- forking the N workers until every one is waiting;
* set -> all results -- ``set()`` until the parent holds all N results;
* exit -- until every worker has exited and been joined.

Then ``clean`` of an arena with N processes attached (what ``python -m
mpevent clean`` and every new arena do to an arena in use), and the
liveness question itself: one lock probe against one psutil lookup.
Peers alternate within the run (the machine is noisy).  Run:

    python benchmarks/lifecycle.py [--sizes 100 300 1000] [--trials 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import mpevent
from mpevent.shm import _arena, _native, _segment

Phases = tuple[float, float, float]


def _mpevent_worker(go: mpevent.Event, ready: Any, result: mpevent.AsyncResult) -> None:
    ready.release()
    go.wait()
    result.set(os.getpid())


def _stdlib_worker(go: Any, ready: Any, pipe: Any) -> None:
    ready.release()
    go.wait()
    pipe.send(os.getpid())


def run_mpevent(n: int, context: Any) -> tuple[Phases, float]:
    go = mpevent.Event()
    results = [mpevent.AsyncResult() for _ in range(n)]
    ready = context.Semaphore(0)
    begin = time.perf_counter()
    workers = [
        context.Process(target=_mpevent_worker, args=(go, ready, result)) for result in results
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    arena = go._record.arena
    fd, size = _segment.open_existing(arena.name)
    try:
        clean_begin = time.perf_counter()
        _arena._clean_one(arena.name, fd, size, dry_run=False)  # in use: nothing unlinked
        clean = time.perf_counter() - clean_begin
    finally:
        os.close(fd)
    assert os.path.exists(_segment.path_of(arena.name))
    set_at = time.perf_counter()
    go.set()
    got = {result.get(timeout=120) for result in results}
    delivered = time.perf_counter()
    for worker in workers:
        worker.join(120)
    ended = time.perf_counter()
    assert got == {worker.pid for worker in workers}
    return (started - begin, delivered - set_at, ended - delivered), clean


def run_stdlib(n: int, context: Any) -> Phases:
    go = context.Event()
    ready = context.Semaphore(0)
    pipes = [context.Pipe(duplex=False) for _ in range(n)]
    begin = time.perf_counter()
    workers = [
        context.Process(target=_stdlib_worker, args=(go, ready, sender)) for _, sender in pipes
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    got = {receiver.recv() for receiver, _ in pipes}
    delivered = time.perf_counter()
    for worker in workers:
        worker.join(120)
    ended = time.perf_counter()
    for receiver, sender in pipes:
        receiver.close()
        sender.close()
    assert got == {worker.pid for worker in workers}
    return started - begin, delivered - started, ended - delivered


def _probe_costs(rounds: int = 2000) -> tuple[float, float | None]:
    """Seconds per liveness question: an OFD lock probe, and psutil's lookup."""
    event = mpevent.Event()
    arena = event._record.arena
    begin = time.perf_counter()
    for _ in range(rounds):
        _native.ofd_held(arena.fd, (arena.entry + 1) % _native.ATTACH_ENTRIES, 1)
    lock = (time.perf_counter() - begin) / rounds
    try:
        import psutil
    except ImportError:
        return lock, None
    pid = os.getppid()
    begin = time.perf_counter()
    for _ in range(rounds):
        psutil.Process(pid).create_time()
    return lock, (time.perf_counter() - begin) / rounds


def _median(runs: list[Any], pick: Callable[[Any], float]) -> float:
    return statistics.median(pick(run) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    context = mp.get_context("fork")
    print("lifecycle of N forked workers (median of trials; mpevent / multiprocessing.Event+Pipe)")
    print(f"{'N':>5}  {'phase':<20} {'mpevent':>10} {'stdlib':>10} {'ratio':>7}")
    for n in args.sizes:
        ours: list[tuple[Phases, float]] = []
        theirs: list[Phases] = []
        for _ in range(args.trials):  # interleaved: each trial runs both
            ours.append(run_mpevent(n, context))
            theirs.append(run_stdlib(n, context))
        totals = []
        for i, phase in enumerate(("start", "set -> all results", "exit")):
            a = _median(ours, lambda run, i=i: run[0][i])
            b = _median(theirs, lambda run, i=i: run[i])
            totals.append((a, b))
            print(f"{n:>5}  {phase:<20} {a:>9.3f}s {b:>9.3f}s {a / b:>6.2f}x")
        a, b = sum(t[0] for t in totals), sum(t[1] for t in totals)
        print(f"{n:>5}  {'whole program':<20} {a:>9.3f}s {b:>9.3f}s {a / b:>6.2f}x")
        clean = _median(ours, lambda run: run[1])
        print(f"{n:>5}  {'clean, N attached':<20} {clean * 1e3:>8.2f}ms")
    lock, lookup = _probe_costs()
    line = f"is a process alive? OFD lock probe {lock * 1e6:.2f} us"
    if lookup is not None:
        line += f", psutil create_time() {lookup * 1e6:.2f} us ({lookup / lock:.0f}x)"
    print(line)


if __name__ == "__main__":
    main()
