"""A NumPy array from a worker arrives without a copy (and read-only)."""

import concurrent.futures

import numpy as np

import mpevent


def simulate(out: mpevent.AsyncResult) -> None:
    out.set(np.linspace(0.0, 1.0, 4_000_000))  # 32 MB, copied once into shared memory


if __name__ == "__main__":
    out = mpevent.AsyncResult()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(simulate, out).result()
    shared = out.get()  # a view of the shared pages: no copy
    print(shared.shape, shared.flags.writeable, round(float(shared.sum())))
    private = out.get(copy=True)  # a private, writable copy when you need one
    private *= 2
    print(private.flags.writeable, round(float(shared.sum())))
