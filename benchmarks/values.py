"""Value handoff: mpevent.AsyncResult beside Pipe, Queue, SharedMemory, Pool and Ray.

For sizes from 100 B to 64 MiB, bytes and NumPy arrays, a fresh result per
value (dropped after use, or with --kept all kept): the time from
set()/send()/put() in the parent until a child blocked in get()/recv()
holds the value.  With Ray installed, NumPy arrays also against ray.put()
and an idle actor's ray.get().  Run from the repository root:

    python benchmarks/values.py [--count N] [--trials T] [--quick] [--kept]
"""

from __future__ import annotations

import argparse
import sys

from mpevent.tools import bench as _bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="handoffs per small size")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials")
    parser.add_argument("--quick", action="store_true", help="four sizes only")
    parser.add_argument("--kept", action="store_true", help="also keep every result")
    args = parser.parse_args()
    sizes = _bench.QUICK_VALUE_SIZES if args.quick else _bench.VALUE_SIZES
    modes = ("dropped", "kept") if args.kept else ("dropped",)
    _bench.report_value_handoff(args.count, args.trials, sizes, modes=modes)
    _bench.report_ray_handoff(max(5, args.count // 10), [1 << 20, 32 << 20])
    sys.exit(0)
