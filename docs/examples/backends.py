"""The same program on this machine's shared memory or on a Redis server: MPEVENT_URL decides."""

import concurrent.futures
import os

import mpevent


def work(ready: mpevent.Event, out: mpevent.AsyncResult) -> None:
    ready.wait(timeout=30)
    out.set({"pid": os.getpid()})


if __name__ == "__main__":
    # local:// (shared memory) unless MPEVENT_URL says e.g. redis://:password@host:6379/0
    # (then MPEVENT_AUTHKEY, the same secret on every host, signs the values).
    with mpevent.connect() as backend:
        ready, out = backend.Event(), backend.AsyncResult()
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            pool.submit(work, ready, out)  # handles pickle into the task, on any host
            ready.set()
            print("answer from another process:", out.get(timeout=30)["pid"] != os.getpid())
