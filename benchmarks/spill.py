"""A value larger than a container's /dev/shm: mpevent spills it to disk; a Pipe streams it.

    sudo python benchmarks/spill.py [--size-mib 256] [--count 5] [--trials 3]

Runs itself again in a private mount namespace (``unshare -m``, root) with
a 64 MiB tmpfs on /dev/shm, Docker's default, so the value cannot live in
shared memory: mpevent writes it to a file of its spill directory (on a
disk) and the receiver maps it (a NumPy array stays zero-copy).  Beside it,
``multiprocessing.Pipe`` with the same array; kept and dropped results,
interleaved handoff by handoff.  Figures: median seconds from ``set()`` /
``send()`` to the blocked receiver holding the array, and the ratio to Pipe.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

INSIDE = "MPEVENT_BENCH_SMALL_SHM"


def _measure(size: int, count: int, trials: int) -> None:
    import numpy as np

    from mpevent.tools.bench._common import medians, print_rows
    from mpevent.tools.bench.values import _pipe_channel, async_result_channel, handoffs

    value = np.full(size // 8, 7, dtype=np.int64)
    table = {}
    for mode in ("kept", "dropped"):
        keep = mode == "kept"
        makers = {
            "mpevent.AsyncResult": async_result_channel(keep),
            "multiprocessing.Pipe": _pipe_channel(keep),
        }
        runs = [handoffs(makers, value, count) for _ in range(trials)]
        table[f"{size >> 20} MiB NumPy, {mode}"] = medians(runs)
    shm = shutil.disk_usage("/dev/shm")
    title = (
        f"through a {shm.total >> 20} MiB /dev/shm (spilled), median of {trials} trials "
        f"x {count} handoffs"
    )
    print_rows(title, table, "multiprocessing.Pipe", 24, short=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        _measure(args.size_mib << 20, args.count, args.trials)
        return 0
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("needs root and unshare(1) for a private 64 MiB /dev/shm", file=sys.stderr)
        return 2
    again = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    command = f"mount -t tmpfs -o size=64m tmpfs /dev/shm && {INSIDE}=1 exec {again}"
    return subprocess.run(["unshare", "-m", "sh", "-c", command], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
