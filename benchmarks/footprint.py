"""The cost of being there: memory, /dev/shm and creation time per object, is_set().

Each peer makes its objects in a fresh forked process (10^6 for mpevent,
10^4 for multiprocessing.Event and Manager().Event(), which cost a mapping
per semaphore and a round trip per object); memory is the RSS of every
process involved (the Manager's server too).  Run from the repository root:

    python benchmarks/footprint.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import sys

from mpevent.tools import bench as _bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the object counts")
    args = parser.parse_args()
    _bench.report_footprint(args.scale)
    sys.exit(0)
