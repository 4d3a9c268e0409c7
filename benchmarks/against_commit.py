"""This checkout against another one (an earlier commit), side by side in one run.

    git worktree add /tmp/old <commit>
    (cd /tmp/old && python setup.py build_ext --inplace)
    python benchmarks/against_commit.py /tmp/old

Measures what a refactoring must not slow down: ``is_set()`` on an Event,
creating Events, a two-process ping-pong (``Event.wait()`` blocking each
round), and small values (100 B, 16 KiB) handed there and back through
fresh, kept AsyncResults (half a round trip each).  Each trial runs both
trees in fresh interpreters, taking turns, so both see the same machine;
the table gives each tree's median and best trial, and the ratios this/other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, os, sys, time, timeit
import mpevent

out = {}
e = mpevent.Event()
out["is_set_ns"] = min(timeit.repeat(e.is_set, number=200_000, repeat=5)) / 200_000 * 1e9
start = time.perf_counter()
made = [mpevent.Event() for _ in range(100_000)]
out["create_us"] = (time.perf_counter() - start) / len(made) * 1e6
del made

rounds = int(sys.argv[1])
ping, pong = mpevent.Event(), mpevent.Event()
pid = os.fork()
if pid == 0:
    for _ in range(rounds + 100):
        ping.wait()
        ping.clear()
        pong.set()
    os._exit(0)
for _ in range(100):  # warm up
    ping.set(); pong.wait(); pong.clear()
start = time.perf_counter()
for _ in range(rounds):
    ping.set(); pong.wait(); pong.clear()
out["ping_pong_us"] = (time.perf_counter() - start) / rounds * 1e6
os.waitpid(pid, 0)

# Small values there and back, a fresh (kept) result each way per round.
for size in (100, 16 << 10):
    value = b"v" * size
    pairs = [(mpevent.AsyncResult(), mpevent.AsyncResult()) for _ in range(rounds // 3)]
    pid = os.fork()
    if pid == 0:
        for there, back in pairs:
            back.set(there.get())
        os._exit(0)
    start = time.perf_counter()
    for there, back in pairs:
        there.set(value)
        back.get()
    out[f"value_{size}B_us"] = (time.perf_counter() - start) / len(pairs) / 2 * 1e6
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _run(tree: Path, rounds: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        check=True,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="a checkout with its extension built in place")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3000, help="ping-pong rounds per trial")
    args = parser.parse_args()
    trees = {"this": HERE, "other": args.other.resolve()}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for trial in range(args.trials):
        order = list(trees) if trial % 2 == 0 else list(trees)[::-1]
        for name in order:
            for key, value in _run(trees[name], args.rounds).items():
                samples[name].setdefault(key, []).append(value)
    # Medians, and the best trial: this VM flips between a fast and a slow
    # mode for seconds at a time, and CPU-bound figures are bimodal.
    print(f"{'figure':>16}  {'this':>9}  {'other':>9}  ratio  best: this  other  ratio")
    for key in samples["this"]:
        this, other = samples["this"][key], samples["other"][key]
        mine, theirs = statistics.median(this), statistics.median(other)
        print(
            f"{key:>16}  {mine:9.3f}  {theirs:9.3f}  {mine / theirs:4.2f}x"
            f"  {min(this):9.3f}  {min(other):6.3f}  {min(this) / min(other):4.2f}x"
        )
    print(f"({args.trials} trials each; ratios are this/other)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
