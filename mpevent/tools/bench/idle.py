"""The cost of waiting: CPU and context switches of idle waiters, per peer."""

from __future__ import annotations

import os
import time
from typing import Any

from ...event import Event
from ._common import (
    CTX,
)

# --- the cost of waiting ------------------------------------------------------


def _idle_waiters(event: Event, threads: int, parked: Any) -> None:
    import threading

    workers = [threading.Thread(target=event.wait) for _ in range(threads)]
    for worker in workers:
        worker.start()
    parked.set()
    for worker in workers:
        worker.join()


def _idle_tasks(event: Event, tasks: int, parked: Any) -> None:
    import asyncio

    async def main() -> None:
        waits = [asyncio.create_task(event.wait_async()) for _ in range(tasks)]
        await asyncio.sleep(0)  # every task links before we say so
        parked.set()
        await asyncio.gather(*waits)

    asyncio.run(main())


def _idle_callbacks(event: Event, callbacks: int, parked: Any) -> None:
    import threading

    called = threading.Event()
    for _ in range(callbacks):
        event.rawlink(lambda _event: called.set())
    parked.set()
    called.wait()


def _idle_everyone(event: Event, each: int, parked: Any) -> None:
    """*each* blocked threads, asyncio tasks (on a loop of their own thread) and callbacks."""
    import threading

    kinds = [CTX.Event() for _ in range(3)]
    runners = [
        threading.Thread(target=run, args=(event, each, ready))
        for run, ready in zip((_idle_waiters, _idle_tasks, _idle_callbacks), kinds, strict=True)
    ]
    for runner in runners:
        runner.start()
    for ready in kinds:
        ready.wait(60)
    parked.set()
    for runner in runners:
        runner.join()


def _switches(pid: int) -> int:

    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.split(":")[0] in (
                        "voluntary_ctxt_switches",
                        "nonvoluntary_ctxt_switches",
                    ):
                        total += int(line.split()[-1])
        except FileNotFoundError:
            continue
    return total


def _cpu_seconds(pid: int) -> float:

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cost(
    processes: int = 4, threads: int = 50, seconds: float = 10.0, kind: str = "threads"
) -> dict[str, float]:
    """Wakeups per second and CPU seconds of blocked waiters, over *seconds*.

    *processes* children each park *threads* threads in Event.wait() with
    no timeout (*kind* "tasks": as many asyncio tasks in wait_async(), on
    one loop; "callbacks": as many rawlink() callbacks, on the hub thread;
    "everyone": as many of each kind in each process);
    their context switches (every thread's, from /proc/<pid>/task/*/status)
    and CPU time are read before and after.
    """
    event = Event()
    ready = [CTX.Event() for _ in range(processes)]
    target = {
        "threads": _idle_waiters,
        "tasks": _idle_tasks,
        "callbacks": _idle_callbacks,
        "everyone": _idle_everyone,
    }[kind]
    # A hub links each handle once, however many callbacks it has.
    linked = processes * {"callbacks": 1, "everyone": 2 * threads + 1}.get(kind, threads)
    children = [CTX.Process(target=target, args=(event, threads, parked)) for parked in ready]
    for child in children:
        child.start()
    try:
        for parked in ready:
            parked.wait(60)
        deadline = time.monotonic() + 30
        while event._record.info()["waiters"] < linked:
            if time.monotonic() > deadline:
                raise RuntimeError("the waiters did not all park within 30 s")
            time.sleep(0.01)
        time.sleep(0.5)  # let the parking settle
        pids = [child.pid for child in children if child.pid is not None]
        switches = sum(_switches(pid) for pid in pids)
        cpu = sum(_cpu_seconds(pid) for pid in pids)
        time.sleep(seconds)
        switches = sum(_switches(pid) for pid in pids) - switches
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu
    finally:
        event.set()
        stuck = _join_all(children, 20.0)
    if stuck:
        raise RuntimeError(f"waiters did not end within 20 s of set(), so were killed: {stuck}")
    return {"wakeups per second": switches / seconds, "CPU seconds": cpu}


def _join_all(children: list[Any], seconds: float) -> list[str]:
    """Join *children* within *seconds* in all; kill the rest, and say where each stood."""
    deadline = time.monotonic() + seconds
    stuck = []
    for child in children:
        child.join(max(deadline - time.monotonic(), 0.0))
        if child.is_alive():
            stuck.append(f"pid {child.pid}: {_where(child.pid)}")
            child.kill()
            child.join(5)
    return stuck


def _where(pid: int) -> str:
    """What each thread of *pid* waits in (the kernel's wchan), for a report."""
    places = []
    try:
        for task in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{task}/wchan") as wchan:
                places.append(wchan.read() or "running")
    except OSError:
        return "gone"
    return ", ".join(f"{places.count(place)} in {place}" for place in sorted(set(places)))


def report_idle_cost(
    processes: int = 4, threads: int = 50, seconds: float = 10.0
) -> dict[str, float]:
    result = idle_cost(processes, threads, seconds)
    print(
        f"{processes * threads} threads blocked in Event.wait() in {processes} processes, "
        f"over {seconds:g} s: {result['wakeups per second']:.1f} wakeups/s in total, "
        f"{result['CPU seconds']:.2f} s of CPU"
    )
    on_loops = idle_cost(processes, threads, seconds, kind="tasks")
    print(
        f"{processes * threads} asyncio tasks in wait_async() on {processes} loops, "
        f"over {seconds:g} s: {on_loops['wakeups per second']:.1f} wakeups/s in total, "
        f"{on_loops['CPU seconds']:.2f} s of CPU"
    )
    on_hubs = idle_cost(processes, threads, seconds, kind="callbacks")
    print(
        f"{processes * threads} rawlink() callbacks on {processes} hub threads, "
        f"over {seconds:g} s: {on_hubs['wakeups per second']:.1f} wakeups/s in total, "
        f"{on_hubs['CPU seconds']:.2f} s of CPU"
    )
    return {
        **result,
        "asyncio wakeups per second": on_loops["wakeups per second"],
        "asyncio CPU seconds": on_loops["CPU seconds"],
        "hub wakeups per second": on_hubs["wakeups per second"],
        "hub CPU seconds": on_hubs["CPU seconds"],
    }
