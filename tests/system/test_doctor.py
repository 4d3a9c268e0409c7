"""python -m mpevent doctor: a report of what this machine allows, and advice."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest

CHECKS = [
    "/dev/shm",
    "page reservation",
    "liveness locks",
    "interpreter",
    "page size",
    "shmem huge pages",
    "PID namespace",
    "spilling",
]


def _doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpevent", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_the_report_names_every_check_and_its_exit_status_agrees() -> None:
    done = _doctor()
    for name in CHECKS:
        assert f"  {name}: " in done.stdout
    levels = [line.split()[0] for line in done.stdout.splitlines() if line.startswith(" ")]
    levels = [level for level in levels if level in ("ok", "note", "warn", "fail")]
    bad = "warn" in levels or "fail" in levels
    assert done.returncode == (1 if bad else 0), done.stdout
    assert "liveness locks: OFD locks work" in done.stdout


def test_json_gives_the_same_checks_for_scripts() -> None:
    done = _doctor("--json")
    report = json.loads(done.stdout)
    assert [check["name"] for check in report["checks"]][: len(CHECKS)] == CHECKS
    assert report["ok"] == (done.returncode == 0)
    shm = report["checks"][0]
    assert shm["facts"]["size"] > 0 and shm["facts"]["free"] <= shm["facts"]["size"]
    pages = report["checks"][CHECKS.index("page size")]
    assert pages["facts"]["page_size"] == os.sysconf("SC_PAGESIZE")
    interpreter = report["checks"][CHECKS.index("interpreter")]["facts"]
    assert interpreter["version"] == platform.python_version()
    assert interpreter["free_threaded"] == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert interpreter["gil_enabled"] == getattr(sys, "_is_gil_enabled", lambda: True)()
    assert interpreter["main_interpreter"] is True


def test_a_dead_redis_server_is_a_failure_with_advice() -> None:
    done = _doctor(env={"MPEVENT_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 1
    assert "fail  Redis: redis://127.0.0.1:1/0 does not answer" in done.stdout
    assert "fix MPEVENT_URL" in done.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private tmpfs on /dev/shm (CI has both)",
)
def test_a_container_sized_dev_shm_is_a_warning_with_the_fix() -> None:
    command = (
        "mount -t tmpfs -o size=64m tmpfs /dev/shm && "
        f"exec {shlex.quote(sys.executable)} -m mpevent doctor"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "warn  /dev/shm: 64.0 MiB" in done.stdout
    assert "--shm-size" in done.stdout
    assert "some of the above will fail" in done.stdout
