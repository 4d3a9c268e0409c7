"""python -m mpevent: list, set, clear, wait, clean and their exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpevent
from mpevent.shm import _arena, _segment


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpevent", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def named_event() -> Iterator[mpevent.Event]:
    name = f"cli-{os.getpid()}"
    event = mpevent.Event(name, create=True)
    yield event
    with contextlib.suppress(FileNotFoundError, ValueError):
        event.remove_name()


def test_set_clear_and_wait_by_name(named_event: mpevent.Event) -> None:
    name = named_event.name
    assert name is not None
    assert _cli("wait", name, "--timeout", "0.1").returncode == 1
    assert _cli("set", name).returncode == 0
    assert named_event.is_set()
    assert _cli("wait", name, "--timeout", "5").returncode == 0
    assert _cli("clear", name).returncode == 0
    assert not named_event.is_set()


def test_list_shows_arenas_and_named_objects(named_event: mpevent.Event) -> None:
    result = _cli("list")
    assert result.returncode == 0, result.stderr
    assert f"{named_event.name}: Event, unset, 0 waiters" in result.stdout
    assert f"{os.getpid()}" in result.stdout


def test_missing_name_is_exit_2_with_a_clear_message() -> None:
    result = _cli("set", "no-such-name-at-all")
    assert result.returncode == 2
    assert "no mpevent object is named 'no-such-name-at-all'" in result.stderr


def test_bad_usage_is_exit_2() -> None:
    assert _cli("wait").returncode == 2
    assert _cli("frobnicate").returncode == 2


def test_help_lists_every_command() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("list", "set", "clear", "wait", "clean", "demo"):
        assert command in result.stdout


def test_clean_keeps_live_arenas() -> None:
    mpevent.Event()
    result = _cli("clean")
    assert result.returncode == 0, result.stderr
    for arena in _arena.attached():
        assert os.path.exists(_segment.path_of(arena.name))


@pytest.mark.timeout(600)  # every row, ping-pong in three regimes: minutes on a busy VM
def test_bench_quick_prints_every_benchmark_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot, json_path = tmp_path / "bench.png", tmp_path / "bench.json"
    result = _cli("bench", "--quick", "--plot", str(plot), "--json", str(json_path), timeout=600)
    assert result.returncode == 0, result.stderr
    for heading in (
        "ping-pong round trip",
        "value handoff",
        "receivers parked for milliseconds",
        "wakeup latency",
        "create",
    ):
        assert heading in result.stdout
    # A parked handoff's cost, per peer and side, is in the JSON as numbers.
    accounting = json.loads(json_path.read_text())["parked"]["accounting"]
    for label, peers in accounting.items():
        assert set(peers) == {
            "mpevent.AsyncResult",
            "multiprocessing.Pipe",
            "multiprocessing.Queue",
            "SharedMemory",
        }, label
        for cost in peers.values():
            assert cost["receiver faults"] >= 0 and cost["receiver CPU"] > 0, (label, cost)
            assert cost["in send"] > 0 and cost["to awake"] > 0 and cost["reading"] >= 0
    if os.geteuid() == 0 and shutil.which("unshare"):  # the spill row needs a namespace
        assert "spilled to disk" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_writes_a_summary_json_and_a_plot(tmp_path: Path) -> None:
    # In a child interpreter: matplotlib keeps its font files open.
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    command = ["bench", "--quick", "--only", "wakeups", "--json", str(json_path)]
    done = _cli(*command, "--plot", str(plot_path), timeout=120)
    assert done.returncode == 0, done.stderr
    written = json.loads(json_path.read_text())
    median = written["wakeups"]["idle"]["mpevent Event.wait()"]
    low, high = written["quartiles"]["wakeups"]["idle"]["mpevent Event.wait()"]
    assert 0 < low <= median <= high
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"results written to {json_path}" in done.stdout
    # The summary sets each mpevent figure beside the best other peer
    # ("mp." for "multiprocessing.", to fit 80 columns).
    assert "mp.Event.wait()" in done.stdout.split("results written")[0]


def test_the_demo_prints_each_wakeup_from_set_in_whole_lines() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mpevent.tools import demo; raise SystemExit(not demo.show(3))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    worker_line = re.compile(
        r"  worker (\d) \(pid \d+\): wait\(\) -> True, [\d,]+ us after set\(\)"
    )
    woken = [int(match.group(1)) for line in lines if (match := worker_line.fullmatch(line))]
    assert sorted(woken) == [0, 1, 2]
    assert "parent: 3 workers blocked in wait(); set()" in lines
    # Only the parent prints: every line is one of its own, whole.
    for line in lines:
        assert line == "" or line.startswith("parent") or worker_line.fullmatch(line), line


def test_the_summary_never_takes_a_floor_for_a_peer() -> None:
    from mpevent.tools import benchrun

    table = {"mpevent wait": 2.0, "floor: one word": 1.0, "multiprocessing wait": 3.0}
    assert benchrun._comparisons({"wakeups": {"idle": table}}) == [
        ("wakeups: idle", "mpevent wait", 2.0, "multiprocessing wait", 3.0)
    ]
