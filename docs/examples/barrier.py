"""A worker-ready barrier: start the work only once every worker is up."""

import multiprocessing

import mpevent


def worker(up: mpevent.Event, go: mpevent.Event, out: mpevent.AsyncResult) -> None:
    up.set()  # "I am ready"
    go.wait(timeout=30)  # everyone starts together
    out.set(multiprocessing.current_process().name)


if __name__ == "__main__":
    ups = [mpevent.Event() for _ in range(3)]
    go = mpevent.Event()
    outs = [mpevent.AsyncResult() for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=worker, args=(ups[i], go, outs[i])) for i in range(3)]
    for process in workers:
        process.start()
    try:
        assert len(mpevent.wait(ups, timeout=60)) == 3  # all of them are up
        go.set()
        print(sorted(out.get(timeout=30) for out in outs))
    finally:
        for process in workers:
            process.join(30)
            if process.is_alive():
                process.kill()
