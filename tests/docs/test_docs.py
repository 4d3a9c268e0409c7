"""Every code example of the documentation runs and prints what the docs say."""

from __future__ import annotations

import os
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
    env = {key: value for key, value in os.environ.items() if key != "MPEVENT_URL"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for expected in EXPECTED[name]:
        assert any(expected in line for line in lines), (expected, done.stdout)
