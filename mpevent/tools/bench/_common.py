"""What every benchmark family shares: figures with their spread, interleaving, tables.

The peers of a row run interleaved, trial by trial, so they see the same
machine; compare ratios within a run, not across runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

CTX = mp.get_context("fork")


class Figure(float):
    """The median of timing samples (seconds), which also keeps their spread.

    It is a float wherever a figure is used (ratios, tables, the plot); the
    JSON also gets each figure's quartiles (see ``_benchrun``).
    """

    samples: tuple[float, ...]

    def __new__(cls, samples: Iterable[float]) -> Figure:
        ordered = tuple(sorted(samples))
        figure = super().__new__(cls, statistics.median(ordered))
        figure.samples = ordered
        return figure

    @property
    def spread(self) -> tuple[float, float]:
        """The first and third quartiles of the samples."""
        if len(self.samples) < 2:
            return float(self), float(self)
        low, _, high = statistics.quantiles(self.samples, n=4)
        return low, high


def _spin() -> None:
    os.nice(19)
    while True:
        pass


@contextmanager
def loaded_machine(loaded: bool = True) -> Iterator[None]:
    """While inside, a nice-19 process spins on each CPU (if *loaded*): the
    machine of a user whose workers compute while they wait."""
    spinners = [CTX.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    try:
        if loaded:
            for spinner in spinners:
                spinner.start()
        yield
    finally:
        for spinner in spinners:
            if spinner.pid is not None:
                spinner.kill()
                spinner.join(10)


def turns(names: list[str], i: int) -> list[str]:
    # Rotate who goes first, so no peer always follows the same one.
    k = i % len(names)
    return names[k:] + names[:k]


def interleaved_rounds(
    round_trips: Mapping[str, Callable[[], None]], warmup: int, chunk: int, chunks: int
) -> dict[str, float]:
    """Median seconds per round trip of each peer, the peers taking turns chunk by chunk."""
    samples: dict[str, list[float]] = {name: [] for name in round_trips}
    for round_trip in round_trips.values():
        for _ in range(warmup):
            round_trip()
    names = list(round_trips)
    for i in range(chunks):
        for name in turns(names, i):
            round_trip = round_trips[name]
            start = time.perf_counter()
            for _ in range(chunk):
                round_trip()
            samples[name].append((time.perf_counter() - start) / chunk)
    return {name: Figure(values) for name, values in samples.items()}


KiB, MiB = 1 << 10, 1 << 20


def size_label(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB} MiB"
    return f"{size // KiB} KiB" if size >= KiB else f"{size} B"


# (receive in the child, send in the parent); a channel may add a third
# callable that the parent runs, untimed, before each handoff.
Channel = tuple[Callable[..., Any], ...]


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per peer, the median (and spread) of every trial's samples together."""

    def samples(figure: float) -> tuple[float, ...]:
        return figure.samples if isinstance(figure, Figure) else (figure,)

    return {name: Figure(x for run in runs for x in samples(run[name])) for name in runs[0]}


def print_rows(
    title: str, table: Mapping[str, Mapping[str, float]], base: str, width: int, short: bool = False
) -> None:
    """Print *title*, then per row each peer's median and its ratio to peer *base*.

    *short*: name peers by their last dotted part (``Pipe`` for ``multiprocessing.Pipe``).
    """
    print(title)
    for label, row in table.items():
        floor = row.get(base)
        cells = "  ".join(
            f"{name.split('.')[-1] if short else name} {seconds * 1e6:9.1f} us"
            + (f" ({seconds / floor:4.2f}x)" if floor else "")
            for name, seconds in row.items()
        )
        print(f"  {label:>{width}}: {cells}")


def script(description: str | None, report: Callable[[int, int], object], count: int) -> int:
    """The command line of a benchmarks/ script that runs one report."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=count, help="measurements per trial")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials per peer")
    args = parser.parse_args()
    report(args.count, args.trials)
    return 0
