"""The benchmark plot of ``python -m mpevent bench --plot FILE`` (needs matplotlib)."""

from __future__ import annotations

from typing import Any


def plot(results: dict[str, Any], path: str) -> None:
    """Draw each benchmark as bars of microseconds per peer, one panel each."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'mpevent[bench]'") from None
    panels: list[tuple[str, dict[str, float]]] = [
        (f"set() to waiter in another process, {regime}", table)
        for regime, table in results.get("wakeups", {}).items()
    ]
    for regime, table in results.get("ping_pong", {}).items():
        panels.insert(0, (f"two-process ping-pong round trip, {regime}", table))
    curves: list[tuple[str, Any]] = []
    # One curve panel per "kind mode" (e.g. "numpy dropped"): a row label is
    # "<size> <unit> <kind> <mode>".
    for kind in sorted({_kind_of(label) for label in results.get("values", {})}):
        curves.append(
            (
                kind,
                lambda axis, kind=kind: _plot_sizes(
                    axis, results["values"], kind, results.get("ray") or {}
                ),
            )
        )
    if "broadcast" in results:
        curves.append(("broadcast", lambda axis: _plot_broadcast(axis, results["broadcast"])))
    if not panels and not curves:
        raise SystemExit("nothing to plot: run a row with bars or curves")
    figure, grid = plt.subplots(
        len(panels) + len(curves),
        1,
        figsize=(8, 2.6 * len(panels) + 3.2 * len(curves)),
        squeeze=False,
    )
    axes = [row[0] for row in grid]
    for axis, (_, draw) in zip(axes[len(panels) :], curves, strict=True):
        draw(axis)
    for axis, (title, row) in zip(axes, panels, strict=False):
        names = [name for name in row if not name.endswith(" CPU")]
        micros = [row[name] * 1e6 for name in names]
        colors = ["tab:green" if name.startswith("mpevent") else "tab:gray" for name in names]
        axis.barh(names, micros, color=colors)
        axis.set_title(title, fontsize=10)
        # A peer 100x slower than the rest (Manager().Event(), a round trip
        # through a server process) would squash every other bar to a
        # sliver on a linear axis: past 20x, the axis is logarithmic.
        if micros and min(micros) > 0 and max(micros) > 20 * min(micros):
            axis.set_xscale("log")
            axis.set_xlabel("microseconds, log scale (lower is better)")
        else:
            axis.set_xlabel("microseconds (lower is better)")
        axis.invert_yaxis()
        for y, value in enumerate(micros):
            axis.text(value, y, f" {value:,.1f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_sizes(
    axis: Any,
    table: dict[str, dict[str, float]],
    kind: str,
    ray: dict[str, dict[str, float]],
) -> None:
    """Latency against value size, log-log, one line per peer (Ray's too, where measured)."""
    rows = [(label, row) for label, row in table.items() if _kind_of(label) == kind]
    sizes = [_bytes_of(label) for label, _ in rows]
    for peer in rows[0][1]:
        style = "-o" if peer.startswith("mpevent") else "--."
        axis.plot(sizes, [row[peer] * 1e6 for _, row in rows], style, label=peer)
    beside = [(label, row) for label, row in ray.items() if _kind_of(label) == kind]
    if beside:
        axis.plot(
            [_bytes_of(label) for label, _ in beside],
            [row["ray.put + actor get"] * 1e6 for _, row in beside],
            "s:",
            label="Ray object store (ray.put + actor get)",
        )
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_title(
        f"{kind}: value handoff to a blocked reader (fresh result per value)", fontsize=10
    )
    axis.set_xlabel("value size (bytes)")
    axis.set_ylabel("microseconds")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)


def _kind_of(label: str) -> str:
    return " ".join(label.split()[2:])


def _bytes_of(label: str) -> int:
    number, unit = label.split()[:2]
    return int(number) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}[unit]


def _plot_broadcast(axis: Any, table: dict[str, dict[str, float]]) -> None:
    """Time to the last woken process against the number of waiters, log-log."""
    counts = [int(label.split()[0]) for label in table]
    for peer in next(iter(table.values())):
        style = "-o" if peer.startswith("mpevent") else "--."
        axis.plot(counts, [row[peer] * 1e6 for row in table.values()], style, label=peer)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_title("broadcast: one set() until the last of N blocked processes runs", fontsize=10)
    axis.set_xlabel("waiting processes")
    axis.set_ylabel("microseconds")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
