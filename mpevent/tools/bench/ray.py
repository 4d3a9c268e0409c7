"""Value handoff beside Ray's object store (when Ray is installed)."""

from __future__ import annotations

import time
from typing import Any

from ._common import (
    Figure,
    print_rows,
    size_label,
)
from .values import async_result_channel, handoffs, make_value


class _RayTaker:
    """A Ray actor that takes an array out of the object store (and may keep it)."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def take(self, refs: list[Any], keep: bool = False) -> float:
        import ray

        value = ray.get(refs[0])  # in a list, so Ray does not resolve it for us
        stamp = time.perf_counter()
        if keep:
            self.kept.append(value)
        del value
        return stamp

    def drop(self) -> None:
        self.kept.clear()


def ray_handoff(
    count: int, sizes: list[int], modes: tuple[str, ...] = ("dropped", "kept")
) -> dict[str, dict[str, float]] | None:
    """NumPy arrays: ray.put() then an idle actor takes the array, beside mpevent.

    *kept*: every result (and its ObjectRef) and every array is kept until
    the row ends, as a program that collects results does; *dropped*: each
    is let go after use.  None if Ray is not installed.  mpevent's rows are
    measured before Ray starts (its threads make forking unsafe), Ray's
    after: blocks of one run.
    """
    try:
        import ray
    except ImportError:
        return None
    ours = {
        (size, mode): handoffs(
            {"mpevent.AsyncResult": async_result_channel(mode == "kept")},
            make_value("numpy", size),
            count,
        )["mpevent.AsyncResult"]
        for size in sizes
        for mode in modes
    }
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        taker: Any = ray.remote(_RayTaker).remote()
        table = {}
        for size in sizes:
            value = make_value("numpy", size)
            ray.get(taker.take.remote([ray.put(value)]))  # warm the actor
            for mode in modes:
                keep = mode == "kept"
                samples, refs = [], []
                for _ in range(count):
                    time.sleep(0.002)
                    start = time.perf_counter()
                    ref = ray.put(value)
                    samples.append(ray.get(taker.take.remote([ref], keep)) - start)
                    if keep:
                        refs.append(ref)
                    del ref
                ray.get(taker.drop.remote())
                del refs
                table[f"{size_label(size)} numpy {mode}"] = {
                    "mpevent.AsyncResult": ours[size, mode],
                    "ray.put + actor get": Figure(samples),
                }
        return table
    finally:
        ray.shutdown()


def report_ray_handoff(count: int, sizes: list[int]) -> dict[str, dict[str, float]] | None:
    table = ray_handoff(count, sizes)
    if table is None:
        print("Ray's object store: not installed (pip install ray), skipped")
        return None
    title = "NumPy array handoff vs Ray's object store, median"
    print_rows(title, table, "ray.put + actor get", 20)
    return table
