"""Inside a gevent program, waiting blocks only the waiting greenlet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
