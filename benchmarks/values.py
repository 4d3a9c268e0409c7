"""Value handoff: mpevent.AsyncResult beside multiprocessing.Pipe and Queue.

For 100 B, 1 MiB and 32 MiB values: the time from set()/send()/put() in the
parent until a child blocked in get()/recv() holds the value.  Run from the
repository root:

    python benchmarks/values.py [--count N]
"""

from __future__ import annotations

import sys

from mpevent import _bench

if __name__ == "__main__":
    sys.exit(_bench.script(__doc__, _bench.report_value_handoff, count=200))
