"""A Pool worker killed by SIGKILL: the parent's get() raises instead of hanging.

With multiprocessing.Pool's own AsyncResult the parent would wait forever
(python/cpython#96062).  The worker claims the result first: if it dies
before setting it, every reader sees mpevent.ProcessDied within a second.
"""

import multiprocessing
import os
import signal

import mpevent


def work(result: mpevent.AsyncResult, claimed: mpevent.Event) -> None:
    with result.claim():  # "I will set this, or the readers hear that I died"
        claimed.set()
        os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, say
        result.set("never reached")


if __name__ == "__main__":
    result, claimed = mpevent.AsyncResult(), mpevent.Event()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply_async(work, (result, claimed))
        claimed.wait(60)
        try:
            result.get(timeout=30)
        except mpevent.ProcessDied as exc:
            print("get() raised:", type(exc).__name__, "killed" if not exc.exited else "exited")
        pool.terminate()
