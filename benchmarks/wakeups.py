"""Wakeup latency: set() in one process to wait(), a rawlink callback, an asyncio task.

Beside multiprocessing.Event for reference.  Run from the repository root:

    python benchmarks/wakeups.py [--count N] [--trials N]
"""

from __future__ import annotations

import argparse
import sys

from mpevent import _bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="wakeups per trial")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials per peer")
    args = parser.parse_args(argv)
    _bench.report_wakeup_latency(args.count, args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
