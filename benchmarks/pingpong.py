"""Two-process ping-pong and creation cost: mpevent.Event beside its peers.

Peers: mpevent.Event, multiprocessing.Event and a raw pair of
multiprocessing semaphores (the floor).  Run from the repository root:

    python benchmarks/pingpong.py [--count ROUNDS] [--trials N]
"""

from __future__ import annotations

import sys

from mpevent.tools import bench as _bench


def _report(rounds: int, trials: int) -> None:
    _bench.report_ping_pong(rounds, trials)
    _bench.report_creation(1_000_000)


if __name__ == "__main__":
    sys.exit(_bench.script(__doc__, _report, count=5000))
