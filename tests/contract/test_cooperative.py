"""Inside a gevent program, waiting blocks only the waiting greenlet."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Not installable everywhere CI runs (the free-threaded build): skip, saying so.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gevent") is None, reason="gevent is not installed here"
)

PROGRAM = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import time, gevent, multiprocessing as mp, mpevent

    def child(event, result):
        event.wait(30)
        result.set("from child")

    if __name__ == "__main__":
        event, result = mpevent.Event(), mpevent.AsyncResult()
        p = mp.get_context("spawn").Process(target=child, args=(event, result))
        p.start()
        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                gevent.sleep(0.002)
        t = gevent.spawn(ticker)
        gevent.spawn_later(0.3, event.set)
        getter = gevent.spawn(result.get, timeout=30)
        getter.join(40)
        assert getter.successful(), getter.exception
        print(getter.value, len(ticks) > 20)
        t.kill()
        p.join(30)
        print(p.exitcode)
    """
)


def test_waiting_greenlet_does_not_freeze_the_others(tmp_path: Path) -> None:
    script = tmp_path / "cooperative.py"
    script.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from", "child", "True", "0"]


EVERY_BLOCKING_CALL = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import os, secrets, subprocess, sys, gevent, mpevent

    backend = mpevent.connect(os.environ.get("MPEVENT_URL", "local://"))
    SETTER = (
        "import os, sys, time, mpevent; b = mpevent.connect(os.environ['MPEVENT_URL']); "
        "e, r = b.Event.open(sys.argv[1]), b.AsyncResult.open(sys.argv[2]); "
        "time.sleep(0.3); e.set(); r.set('value')"
    )

    calls = {
        "Event.wait": lambda e, r: e.wait(10),
        "Event.wait()": lambda e, r: e.wait(),
        "AsyncResult.get()": lambda e, r: r.get(),
        "AsyncResult.get": lambda e, r: r.get(timeout=10),
        "AsyncResult.wait": lambda e, r: r.wait(10),
        "mpevent.wait": lambda e, r: mpevent.wait([e, r], timeout=10),
        "mpevent.wait(count=1)": lambda e, r: mpevent.wait([e, r], timeout=10, count=1),
        "mpevent.iwait": lambda e, r: list(mpevent.iwait([e, r], timeout=10)),
    }
    for name, call in calls.items():
        tag = secrets.token_hex(4)
        event = backend.Event(f"coop-e-{tag}", create=True)
        result = backend.AsyncResult(f"coop-r-{tag}", create=True)
        setter = subprocess.Popen([sys.executable, "-c", SETTER, event.name, result.name])
        ticks = [0]
        def ticker():
            while True:
                ticks[0] += 1
                gevent.sleep(0.002)
        running = gevent.spawn(ticker)
        waiter = gevent.spawn(call, event, result)
        waiter.join(20)
        running.kill()
        setter.wait(20)
        event.remove_name()
        result.remove_name()
        # 0.3 s at a tick per 2 ms is about 150 ticks: 20 means the loop ran.
        print(name.replace(" ", ""), waiter.successful() and bool(waiter.value), ticks[0] >= 20)
    backend.close()
    """
)


def _run_every_blocking_call(tmp_path: Path, env: dict[str, str]) -> None:
    import os

    script = tmp_path / "every_call.py"
    script.write_text(EVERY_BLOCKING_CALL)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 8, result.stdout
    for line in lines:
        name, woke, ticked = line.split()
        assert (woke, ticked) == ("True", "True"), f"{name}: the other greenlets froze"


def test_every_blocking_call_lets_other_greenlets_run_on_shared_memory(tmp_path: Path) -> None:
    _run_every_blocking_call(tmp_path, {"MPEVENT_URL": "local://"})


def test_every_blocking_call_lets_other_greenlets_run_on_redis(tmp_path: Path) -> None:
    import redis_servers

    with redis_servers.single_server(tmp_path / "redis") as port:
        _run_every_blocking_call(
            tmp_path,
            {"MPEVENT_URL": f"redis://127.0.0.1:{port}/0", "MPEVENT_AUTHKEY": "cooperative"},
        )
