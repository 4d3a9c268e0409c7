"""The cost of waiting: wakeups and CPU time of threads blocked in Event.wait().

200 threads in 4 processes wait with no timeout for 10 s; every thread's
context switches come from /proc/<pid>/task/*/status.  Run from the
repository root:

    python benchmarks/idle.py [--processes 4] [--threads 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys

from mpevent.tools import bench as _bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=50, help="waiting threads per process")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    _bench.report_idle_cost(args.processes, args.threads, args.seconds)
    sys.exit(0)
