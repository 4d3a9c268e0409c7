"""The three AsyncResult examples of gevent's API page, across processes."""

import concurrent.futures

import mpevent


def divide(a: int, b: int) -> float:
    return a / b


if __name__ == "__main__":
    # To pass a value call set(): get() in any process returns it.
    result = mpevent.AsyncResult()
    result.set(100)
    print(result.get())

    # To pass an exception call set_exception(): get() raises it.
    result = mpevent.AsyncResult()
    result.set_exception(RuntimeError("failure"))
    try:
        result.get()
    except RuntimeError as exc:
        print("RuntimeError:", exc)

    # AsyncResult is a link target: a Future of another process fills it.
    result = mpevent.AsyncResult()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(divide, 1, 0).add_done_callback(result)
        try:
            result.get(timeout=30)
        except ZeroDivisionError as exc:
            print("ZeroDivisionError:", exc)
