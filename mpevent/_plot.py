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
        ("two-process ping-pong round trip", results["ping_pong"]),
        ("set() to waiter in another process", results["wakeups"]),
    ]
    for size, row in results["values"].items():
        panels.append((f"{size} value handoff", row))
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)))
    for axis, (title, row) in zip(axes, panels, strict=True):
        names = list(row)
        micros = [row[name] * 1e6 for name in names]
        colors = ["tab:green" if name.startswith("mpevent") else "tab:gray" for name in names]
        axis.barh(names, micros, color=colors)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("microseconds (lower is better)")
        axis.invert_yaxis()
        for y, value in enumerate(micros):
            axis.text(value, y, f" {value:,.1f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
