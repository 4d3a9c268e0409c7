"""In a gevent program, waiting blocks only the calling greenlet."""

import multiprocessing

import gevent

import mpevent


def set_later(event: mpevent.Event) -> None:
    event.set()


if __name__ == "__main__":
    event = mpevent.Event()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(5)])
    waiter = gevent.spawn(event.wait, 30)  # other greenlets keep running meanwhile
    gevent.sleep(0.1)
    process = multiprocessing.get_context("spawn").Process(target=set_later, args=(event,))
    process.start()
    gevent.joinall([ticker, waiter], timeout=30)
    process.join(30)
    print("woke:", waiter.value, "ticks while waiting:", len(ticks))
