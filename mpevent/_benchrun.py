"""Running benchmark rows: a progress bar, a summary of ratios, the JSON and the plot.

``python -m mpevent bench`` and the demo both run rows through :func:`run`.
rich and matplotlib (the ``bench`` extra) are optional: without them the
rows print as plain text, the summary is a plain table and the plot is
skipped with a line saying how to get it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from typing import Any

_EXTRA = "pip install 'mpevent[bench]'"


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """Yield step(name): a rich progress bar if rich is installed, else a plain line."""
    if importlib.util.find_spec("rich") is None:
        done = [0]

        def line(name: str) -> None:
            done[0] += 1
            print(f"[{done[0]}/{total}] {name}", flush=True)

        yield line
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("benchmarks", total=total)

        def step(name: str) -> None:
            if progress.tasks[task].description != "benchmarks":
                progress.advance(task)
            progress.update(task, description=f"running {name}")

        yield step


def _comparisons(results: dict[str, Any]) -> list[tuple[str, str, float, str, float]]:
    """(row, our peer, our figure, best other peer, its figure) for every timed table."""
    found = []

    def compare(label: str, table: dict[str, Any]) -> None:
        figures = {peer: value for peer, value in table.items() if isinstance(value, float)}
        ours = {peer: value for peer, value in figures.items() if peer.startswith("mpevent")}
        others = {peer: value for peer, value in figures.items() if peer not in ours}
        if ours and others:
            best = min(others, key=lambda peer: others[peer])
            for peer, value in ours.items():
                found.append((label, peer, value, best, others[best]))

    for row, table in results.items():
        if not isinstance(table, dict) or row in ("idle", "creation", "footprint"):
            continue
        nested = [value for value in table.values() if isinstance(value, dict)]
        if nested:
            for label, sub in table.items():
                if isinstance(sub, dict) and all(isinstance(v, float) for v in sub.values()):
                    compare(f"{row}: {label}", sub)
        else:
            compare(row, table)
    return found


def summary(results: dict[str, Any]) -> None:
    """Print each mpevent figure beside the best other peer of its row, as a ratio."""
    found = _comparisons(results)
    if not found:
        return
    if importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="mpevent against the best other peer of each row (lower is better)")
        for column in ("row", "mpevent", "µs", "best other peer", "µs", "ratio"):
            table.add_column(column, justify="right" if column in ("µs", "ratio") else "left")
        for row, ours, value, best, theirs in found:
            ratio = value / theirs
            style = "green" if ratio <= 1.0 else "red"
            table.add_row(
                row,
                ours,
                f"{value * 1e6:,.1f}",
                best,
                f"{theirs * 1e6:,.1f}",
                f"[{style}]{ratio:.2f}x[/{style}]",
            )
        Console().print(table)
        return
    print("mpevent against the best other peer of each row (lower is better)")
    for row, ours, value, best, theirs in found:
        print(
            f"  {row:34s} {ours:30s} {value * 1e6:10.1f} us   {best:26s} "
            f"{theirs * 1e6:10.1f} us   {value / theirs:5.2f}x"
        )


def run(
    rows: dict[str, Callable[[], object]], json_path: str | None, plot_path: str | None
) -> dict[str, Any]:
    """Run *rows* in order; print the summary; write the JSON and the plot if asked."""
    results: dict[str, Any] = {}
    with _progress(len(rows)) as step:
        for name, row in rows.items():
            step(name)
            results[name] = row()
            print()
    summary(results)
    if json_path:
        with open(json_path, "w") as file:
            json.dump(results, file, indent=1)
        print(f"results written to {json_path}")
    if plot_path:
        if importlib.util.find_spec("matplotlib") is None:
            print(f"no plot: it needs matplotlib ({_EXTRA})")
        else:
            from . import _plot

            _plot.plot(results, plot_path)
            print(f"plot written to {plot_path}")
    return results
