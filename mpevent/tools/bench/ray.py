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
    """A Ray actor that takes an array out of the object store."""

    def take(self, refs: list[Any]) -> float:
        import ray

        value = ray.get(refs[0])  # in a list, so Ray does not resolve it for us
        stamp = time.perf_counter()
        del value
        return stamp


def ray_handoff(count: int, sizes: list[int]) -> dict[str, dict[str, float]] | None:
    """NumPy arrays: ray.put() then an idle actor takes the array, beside mpevent.

    None if Ray is not installed.  mpevent's rows are measured before Ray
    starts (its threads make forking unsafe), Ray's after: blocks of one run.
    """
    try:
        import ray
    except ImportError:
        return None
    ours = {
        size: handoffs(
            {"mpevent.AsyncResult": async_result_channel(False)}, make_value("numpy", size), count
        )["mpevent.AsyncResult"]
        for size in sizes
    }
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        taker: Any = ray.remote(_RayTaker).remote()
        table = {}
        for size in sizes:
            value = make_value("numpy", size)
            ray.get(taker.take.remote([ray.put(value)]))  # warm the actor
            samples = []
            for _ in range(count):
                time.sleep(0.002)
                start = time.perf_counter()
                ref = ray.put(value)
                samples.append(ray.get(taker.take.remote([ref])) - start)
                del ref
            table[f"{size_label(size)} numpy"] = {
                "mpevent.AsyncResult": ours[size],
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
    print_rows(title, table, "ray.put + actor get", 14)
    return table
