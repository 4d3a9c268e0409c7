"""Across machines: mpevent on Redis beside raw Redis, Dask and shared memory.

Ping-pong between two processes, broadcast to N processes and value
handoff (100 B, 1 MiB, 32 MiB) through one Redis server or cluster, against
a raw RPUSH/BLPOP pair, raw PUBLISH/SUBSCRIBE, Dask's Event and Variable
with a real `dask scheduler`, and the shared-memory backend.  Needs
MPEVENT_AUTHKEY.  Run from the repository root:

    MPEVENT_AUTHKEY=bench python benchmarks/across_machines.py redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import os
import sys

from mpevent.tools.bench import across_machines

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="redis://host:port/db of a server or cluster node")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MPEVENT_AUTHKEY", "bench")
    across_machines.report(args.url, args.rounds, args.trials)
    sys.exit(0)
