"""Two-process ping-pong and creation cost: mpevent.Event beside its peers.

Peers: mpevent.Event, multiprocessing.Event and a raw pair of
multiprocessing semaphores (the floor).  Run from the repository root:

    python benchmarks/pingpong.py [--rounds N] [--trials N] [--create N]
"""

from __future__ import annotations

import argparse
import sys

from mpevent import _bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per trial")
    parser.add_argument("--trials", type=int, default=7, help="interleaved trials per peer")
    parser.add_argument("--create", type=int, default=1_000_000, help="Events to create")
    args = parser.parse_args(argv)
    _bench.report_ping_pong(args.rounds, args.trials)
    if args.create:
        _bench.report_creation(args.create)
    return 0


if __name__ == "__main__":
    sys.exit(main())
