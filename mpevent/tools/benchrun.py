"""Running benchmark rows: a progress bar, a summary of ratios, the JSON and the plot.

Figures are medians; where a row kept its samples (``_bench.Figure``) the
summary and the JSON also give their quartiles.

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
        # "<peer> CPU" figures are CPU seconds beside a peer's time, not a peer.
        figures = {
            peer: value
            for peer, value in table.items()
            if isinstance(value, float) and not peer.endswith(" CPU")
        }
        ours = {peer: value for peer, value in figures.items() if peer.startswith("mpevent")}
        # A floor ("floor: ...") is what no peer can beat, not a peer.
        others = {
            peer: value
            for peer, value in figures.items()
            if peer not in ours and not peer.startswith("floor")
        }
        if ours and others:
            best = min(others, key=lambda peer: others[peer])
            for peer, value in ours.items():
                found.append((label, peer, value, best, others[best]))

    for row, table in results.items():
        if not isinstance(table, dict) or row in ("idle", "creation", "footprint"):
            continue
        table = {label: sub for label, sub in table.items() if label != "accounting"}
        nested = [value for value in table.values() if isinstance(value, dict)]
        if nested:
            for label, sub in table.items():
                if isinstance(sub, dict) and all(isinstance(v, float) for v in sub.values()):
                    compare(f"{row}: {label}", sub)
        else:
            compare(row, table)
    return found


def quartiles(results: dict[str, Any]) -> dict[str, Any]:
    """Each figure's first and third quartiles, under the same keys as in *results*."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            found = {key: walk(value) for key, value in node.items()}
            return {key: value for key, value in found.items() if value is not None} or None
        spread = getattr(node, "spread", None)  # a _bench.Figure
        return None if spread is None else [spread[0], spread[1]]

    return walk(results) or {}


def _micros(figure: float) -> str:
    spread = getattr(figure, "spread", None)
    text = f"{figure * 1e6:,.1f}"
    if spread is not None and spread[0] != spread[1]:
        text += f" ({spread[0] * 1e6:,.1f}-{spread[1] * 1e6:,.1f})"
    return text


def _short(peer: str) -> str:
    """A peer's name for a narrow column: ``mp.`` for ``multiprocessing.``, no ``mpevent``."""
    return peer.replace("multiprocessing.", "mp.").removeprefix("mpevent ").removeprefix("mpevent.")


def summary(results: dict[str, Any]) -> None:
    """Print each mpevent figure beside the best other peer of its row, as a ratio."""
    found = _comparisons(results)
    if not found:
        return
    if importlib.util.find_spec("rich") is not None:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        # Readable in a plain 80-column terminal: medians only (the
        # quartiles are in the JSON), our peers without "mpevent", "mp."
        # for "multiprocessing.", and cells that wrap rather than end in an
        # ellipsis.
        table = Table(
            title="mpevent against the best other peer of each row (lower is better)",
            caption="µs: medians; their quartiles are in the JSON (--json)",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
        )
        for column in ("row", "mpevent", "µs", "best other", "µs", "ratio"):
            table.add_column(
                column,
                justify="right" if column in ("µs", "ratio") else "left",
                overflow="fold",
            )
        for row, ours, value, best, theirs in found:
            ratio = value / theirs
            style = "green" if ratio <= 1.0 else "red"
            table.add_row(
                row,
                _short(ours),
                f"{value * 1e6:,.1f}",
                _short(best),
                f"{theirs * 1e6:,.1f}",
                f"[{style}]{ratio:.2f}x[/{style}]",
            )
        Console().print(table)
        return
    # Without rich: two lines a row, so that 80 columns hold it.
    print("mpevent against the best other peer of each row (lower is better;")
    print("us: medians; their quartiles are in the JSON)")
    for row, ours, value, best, theirs in found:
        print(f"  {row}")
        print(
            f"    {_short(ours)[:22]:22s} {value * 1e6:8.1f} us  {_short(best)[:20]:20s} "
            f"{theirs * 1e6:8.1f} us {value / theirs:5.2f}x"
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
            # Medians by row, and their quartiles under "quartiles".
            json.dump({**results, "quartiles": quartiles(results)}, file, indent=1)
        print(f"results written to {json_path}")
    if plot_path:
        if importlib.util.find_spec("matplotlib") is None:
            print(f"no plot: it needs matplotlib ({_EXTRA})")
        else:
            from . import plot

            plot.plot(results, plot_path)
            print(f"plot written to {plot_path}")
    return results
