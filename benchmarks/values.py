"""Value handoff: mpevent.AsyncResult beside multiprocessing.Pipe and Queue.

For 100 B, 1 MiB and 32 MiB values: the time from set()/send()/put() in the
parent until a child blocked in get()/recv() holds the value.  Run from the
repository root:

    python benchmarks/values.py [--count N]
"""

from __future__ import annotations

import argparse
import sys

from mpevent import _bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="handoffs per small size")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials per peer")
    args = parser.parse_args(argv)
    _bench.report_value_handoff(args.count, args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
