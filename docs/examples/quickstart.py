"""Workers wait for one Event, then send results back through AsyncResults."""

import concurrent.futures

import mpevent


def work(number: int, ready: mpevent.Event, out: mpevent.AsyncResult) -> None:
    ready.wait()  # blocks until any process sets it
    out.set({"worker": number, "square": number * number})


if __name__ == "__main__":
    ready = mpevent.Event()
    results = [mpevent.AsyncResult() for _ in range(4)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=4) as pool:
        for number, out in enumerate(results):
            pool.submit(work, number, ready, out)  # handles pickle as references
        ready.set()  # wakes every waiter, in every process
        print([result.get(timeout=30)["square"] for result in results])
