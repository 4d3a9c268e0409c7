"""A value larger than a container's /dev/shm: mpevent spills it to disk; a Pipe streams it.

    sudo python benchmarks/spill.py [--size-mib 256] [--count 5] [--trials 3]

Runs in a private mount namespace (``unshare -m``, root) with a 64 MiB
tmpfs on /dev/shm, Docker's default, so the value cannot live in shared
memory: mpevent writes it to a file of its spill directory (on a disk) and
the receiver maps it (a NumPy array stays zero-copy).  Beside it,
``multiprocessing.Pipe`` with the same array; kept and dropped results,
interleaved handoff by handoff.  Figures: median seconds from ``set()`` /
``send()`` to the blocked receiver holding the array, and the ratio to Pipe.
"""

from __future__ import annotations

import argparse
import sys

from mpevent.tools.bench import spill

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    table = spill.report_spill(args.size_mib << 20, args.count, args.trials)
    sys.exit(0 if table is not None else 2)
