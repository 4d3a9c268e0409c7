"""What objects cost to create and hold: time, memory, /dev/shm, per peer."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from ...event import Event


def creation(count: int) -> float:
    """Seconds to create *count* Events (kept alive until the end)."""
    start = time.perf_counter()
    events = [Event() for _ in range(count)]
    elapsed = time.perf_counter() - start
    del events
    return elapsed


def _footprint_child(peer: str, count: int, out: Any) -> None:
    import gc
    import shutil
    import threading
    import timeit

    import psutil

    from ...asyncresult import AsyncResult

    spawn = mp.get_context("spawn")
    manager: Any = spawn.Manager() if peer == "Manager().Event()" else None
    processes = [psutil.Process()] + (
        [] if manager is None else [psutil.Process(manager._process.pid)]
    )
    make: Callable[[], Any] = {
        "mpevent.Event": Event,
        "mpevent.AsyncResult": AsyncResult,
        "multiprocessing.Event": spawn.Event,
        "Manager().Event()": lambda: manager.Event(),
        "threading.Event (one process)": threading.Event,
    }[peer]
    gc.collect()
    rss = sum(process.memory_info().rss for process in processes)
    shm = shutil.disk_usage("/dev/shm").used
    start = time.perf_counter()
    try:
        objects = [make() for _ in range(count)]
    except OSError as exc:  # e.g. out of memory mappings
        out.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    seconds = time.perf_counter() - start
    gc.collect()
    rss = sum(process.memory_info().rss for process in processes) - rss
    shm = shutil.disk_usage("/dev/shm").used - shm
    probe = getattr(objects[0], "is_set", None) or objects[0].ready
    calls = 10_000 if manager is not None else 1_000_000
    is_set = min(timeit.repeat(probe, number=calls, repeat=3)) / calls
    out.send(
        {
            "objects": len(objects),
            "memory": rss / len(objects),
            "shm": shm / len(objects),
            "create": seconds / len(objects),
            "is_set": is_set,
        }
    )
    del objects
    if manager is not None:
        manager.shutdown()


FOOTPRINT_COUNTS = {
    "mpevent.Event": 1_000_000,
    "mpevent.AsyncResult": 1_000_000,
    "multiprocessing.Event": 10_000,  # five semaphores, each its own mapping
    "Manager().Event()": 10_000,  # one round trip per object
    "threading.Event (one process)": 1_000_000,  # the in-process reference
}


def footprint(scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per peer: memory (all its processes' RSS), /dev/shm and creation time per object,
    and seconds per is_set() (ready() for AsyncResult).

    Each peer makes its objects in a fresh (spawned) process: a forked one
    would find this process's arena with pages already in place.
    """
    spawn = mp.get_context("spawn")
    table: dict[str, dict[str, Any]] = {}
    for peer, full in FOOTPRINT_COUNTS.items():
        count = max(1000, int(full * scale))
        receiver, sender = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_footprint_child, args=(peer, count, sender))
        child.start()
        try:
            table[peer] = receiver.recv() if receiver.poll(600) else {"error": "no answer"}
        finally:
            child.join(60)
            if child.is_alive():
                child.kill()
            receiver.close()
            sender.close()
    return table


def report_footprint(scale: float = 1.0) -> dict[str, dict[str, Any]]:
    table = footprint(scale)
    print("cost of being there, per object: memory (RSS of every process involved), /dev/shm,")
    print("creation time, is_set() (AsyncResult: ready()); each peer in a fresh process")
    for peer, row in table.items():
        if "error" in row:
            print(f"  {peer:30s} failed: {row['error']}")
            continue
        print(
            f"  {peer:30s} {row['memory']:7.0f} B memory {row['shm']:7.0f} B /dev/shm "
            f"{row['create'] * 1e6:8.2f} us to create {row['is_set'] * 1e9:8.1f} ns is_set()"
            f"   ({row['objects']:,} objects)"
        )
    return table


def report_creation(count: int) -> float:
    seconds = creation(count)
    print(f"create {count:,} Events: {seconds:.2f} s ({seconds / count * 1e6:.2f} us each)")
    return seconds
