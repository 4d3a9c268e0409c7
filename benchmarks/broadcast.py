"""Broadcast: one set() wakes N blocked processes; the time until the last one runs.

mpevent.Event beside multiprocessing.Event, N = 1, 2, 4 ... 64.  Run from
the repository root:

    python benchmarks/broadcast.py [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import sys

from mpevent.tools import bench as _bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="set() calls per N and peer")
    parser.add_argument("--quick", action="store_true", help="N = 1, 4, 16 only")
    args = parser.parse_args()
    sizes = _bench.QUICK_BROADCAST_SIZES if args.quick else _bench.BROADCAST_SIZES
    _bench.report_broadcast(sizes, args.rounds)
    sys.exit(0)
