"""Wakeup latency: set() in one process to wait(), a callback, an asyncio task, a greenlet.

Beside multiprocessing.Event for reference.  Run from the repository root:

    python benchmarks/wakeups.py [--count N] [--trials N]
"""

from __future__ import annotations

import sys

from mpevent.tools import bench as _bench

if __name__ == "__main__":
    sys.exit(_bench.script(__doc__, _bench.report_wakeup_latency, count=300))
