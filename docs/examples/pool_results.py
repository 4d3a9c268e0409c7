"""Collect results from a multiprocessing.Pool, the first ones first."""

import multiprocessing

import mpevent


def square(x: int, out: mpevent.AsyncResult) -> None:
    if x == 3:
        out.set_exception(ValueError(f"no square for {x}"))
    else:
        out.set(x * x)


if __name__ == "__main__":
    results = [mpevent.AsyncResult() for _ in range(5)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        tasks = pool.starmap_async(square, list(enumerate(results)))
        for finished in mpevent.iwait(results, timeout=60):  # in the order they finish
            print("finished:", results.index(finished))
        # A result is set before its task returns to the pool: let the tasks
        # end before the with block terminates the pool (terminating it
        # mid-task can hang CPython's Pool).
        tasks.wait(60)
    for x, result in enumerate(results):
        print(x, result.value if result.successful() else repr(result.exception))
