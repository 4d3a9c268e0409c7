"""Every code example of the documentation runs and prints what the docs say."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

# What each example must print (a line, or part of one).
EXPECTED = {
    "quickstart.py": ["[0, 1, 4, 9]"],
    "barrier.py": ["['SpawnProcess-1', 'SpawnProcess-2', 'SpawnProcess-3']"],
    "pool_results.py": ["0 0", "2 4", "3 ValueError('no square for 3')", "4 16"],
    "numpy_zero_copy.py": ["(4000000,) False 2000000", "True 2000000"],
    "callbacks.py": ["asyncio: True", "callback: True"],
    "gevent_api.py": ["100", "RuntimeError: failure", "ZeroDivisionError: division by zero"],
    "gevent_greenlets.py": ["woke: True ticks while waiting: 5"],
    "migration.py": ["[True, True]"],
    "names.py": ["set by another process: True"],
    "backends.py": ["answer from another process: True"],
    "killed_worker.py": ["get() raised: ProcessDied killed"],
}


def test_every_example_is_checked() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    if "gevent" in name and importlib.util.find_spec("gevent") is None:
        pytest.skip("gevent is not installed here (the free-threaded build)")
    env = {key: value for key, value in os.environ.items() if key != "MPEVENT_URL"}
    env["PYTHONFAULTHANDLER"] = "1"  # a hung example shows where, on SIGABRT
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLES,
    )
    try:
        # Below pytest-timeout's 120 s, so that a hang ends here with the
        # example's own stacks rather than with the test runner's.
        stdout, stderr = example.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        example.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        stdout, stderr = example.communicate(timeout=15)
        pytest.fail(f"{name} hung for 90 s; its threads:\n{stderr}")
    finally:
        if example.poll() is None:
            example.kill()
            example.wait(15)
    assert example.returncode == 0, stderr
    lines = stdout.splitlines()
    for expected in EXPECTED[name]:
        assert any(expected in line for line in lines), (expected, stdout)
