"""Values to receivers parked for milliseconds: one process per peer, kept and dropped.

The handoff as users write it (issue 43): each peer's receiver blocked in
get()/recv() between values 5 ms (per peer) or 20 ms (long-lived) apart;
latency to the receiver holding the whole value, and per handoff the minor
faults and CPU of each side.  Run from the repository root:

    python benchmarks/parked.py [--rounds N] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

from mpevent.tools import bench as _bench
from mpevent.tools.benchrun import quartiles

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40, help="handoffs per peer and row")
    parser.add_argument("--quick", action="store_true", help="four sizes only")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    args = parser.parse_args()
    sizes = _bench.QUICK_PARKED_SIZES if args.quick else _bench.PARKED_SIZES
    results = _bench.report_parked_handoff(args.rounds, sizes)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {"parked": results, "quartiles": quartiles({"parked": results})}, file, indent=1
            )
    sys.exit(0)
