"""From multiprocessing.Event to mpevent.Event: the same calls, more places to go."""

import concurrent.futures

import mpevent


def wait_for(event: mpevent.Event) -> bool:
    return event.wait(timeout=30)


if __name__ == "__main__":
    # Before: event = multiprocessing.Event() -- which cannot be pickled into
    # a Pool or executor task ("Condition objects should only be shared
    # between processes through inheritance").
    event = mpevent.Event()
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        waiting = [pool.submit(wait_for, event) for _ in range(2)]
        event.set()
        print([future.result(timeout=30) for future in waiting])
