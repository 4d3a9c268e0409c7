"""A value larger than a container's /dev/shm: spilled to disk, beside a Pipe.

Runs in a private mount namespace (``unshare -m``, root) with a 64 MiB
tmpfs on /dev/shm, Docker's default, so the value cannot live in shared
memory: mpevent writes it to a file of its spill directory (on a disk) and
the receiver maps it (a NumPy array stays zero-copy).  Kept and dropped
results, interleaved handoff by handoff with ``multiprocessing.Pipe``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

from ._common import Figure, medians, print_rows

SHM_SIZE = "64m"


def measure(size: int, count: int, trials: int) -> dict[str, dict[str, Figure]]:
    """The table, measured here (call it where /dev/shm is the small one)."""
    import numpy as np

    from .values import _pipe_channel, async_result_channel, handoffs

    value = np.full(size // 8, 7, dtype=np.int64)
    table: dict[str, dict[str, Figure]] = {}
    for mode in ("kept", "dropped"):
        keep = mode == "kept"
        makers = {
            "mpevent.AsyncResult": async_result_channel(keep),
            "multiprocessing.Pipe": _pipe_channel(keep),
        }
        runs = [handoffs(makers, value, count) for _ in range(trials)]
        table[f"{size >> 20} MiB numpy {mode}"] = medians(runs)  # type: ignore[assignment]
    return table


def spill_handoff(size: int, count: int, trials: int) -> dict[str, dict[str, Any]] | None:
    """measure() in a namespace of its own; None without root, unshare(1) or NumPy."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    try:
        import numpy  # noqa: F401
    except ImportError:
        return None
    code = (
        "import json, sys; from mpevent.tools.bench.spill import measure; "
        f"t = measure({size}, {count}, {trials}); "
        "print(json.dumps({row: {peer: list(f.samples) for peer, f in cells.items()} "
        "for row, cells in t.items()}))"
    )
    command = (
        f"mount -t tmpfs -o size={SHM_SIZE} tmpfs /dev/shm && "
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"the spill benchmark failed: {done.stderr.strip()[-2000:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {row: {peer: Figure(s) for peer, s in cells.items()} for row, cells in raw.items()}


def report_spill(size: int, count: int, trials: int) -> dict[str, dict[str, Any]] | None:
    table = spill_handoff(size, count, trials)
    if table is None:
        print("spilling past a 64 MiB /dev/shm: needs root, unshare(1) and NumPy, skipped")
        return None
    title = f"NumPy array through a {SHM_SIZE[:-1]} MiB /dev/shm (spilled to disk), median"
    print_rows(title, table, "multiprocessing.Pipe", 22, short=True)
    return table
