"""Value handoff: a value to a process blocked in get()/recv(), kept or dropped.

Beside Pipe, Queue, SharedMemory and a Pool task's result, bytes and NumPy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._common import (
    CTX,
    Channel,
    Figure,
    KiB,
    MiB,
    medians,
    print_rows,
    size_label,
    turns,
)

# --- value handoff -----------------------------------------------------------


# 100 B, then powers of four from 1 KiB to 64 MiB, and 32 MiB, which targets name.
VALUE_SIZES = [100, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB]
VALUE_SIZES += [32 * MiB, 64 * MiB]
QUICK_VALUE_SIZES = [100, 64 * KiB, MiB, 32 * MiB]


def _receive_all(
    receivers: dict[str, Callable[[int], Any]], ready: Any, count: int, stamps: Any
) -> None:
    arrivals: dict[str, list[float]] = {name: [] for name in receivers}
    for i in range(count):
        for name in turns(list(receivers), i):
            ready.set()
            got = receivers[name](i)
            # A receiver may report the moment itself (a callback on another thread).
            arrivals[name].append(got if isinstance(got, float) else time.perf_counter())
            del got
    stamps.send(arrivals)


def handoffs(
    makers: Mapping[str, Callable[[int], Channel]],
    value: Any,
    count: int,
    settle: float = 0.002,
) -> dict[str, float]:
    """Median seconds from send/set in the parent to the blocked child holding the value.

    One child receives from every peer in turn, handoff by handoff, so all
    peers see the same moments of a noisy machine.  *settle*: seconds the
    parent lets pass for the child to block before each send.
    """
    channels = {name: make(count) for name, make in makers.items()}
    ready = CTX.Event()
    stamps_in, stamps_out = CTX.Pipe(duplex=False)
    receivers = {name: channel[0] for name, channel in channels.items()}
    child = CTX.Process(target=_receive_all, args=(receivers, ready, count, stamps_out))
    child.start()
    starts: dict[str, list[float]] = {name: [] for name in channels}
    try:
        for i in range(count):
            for name in turns(list(channels), i):
                channel = channels[name]
                if len(channel) > 2:
                    channel[2](i)  # untimed preparation (hand over a fresh handle)
                if not ready.wait(30):
                    raise RuntimeError(
                        f"the receiving child stopped answering (exit code {child.exitcode}); "
                        "its error, if any, is above"
                    )
                ready.clear()
                time.sleep(settle)  # let the child block in receive
                starts[name].append(time.perf_counter())
                channel[1](i, value)
        arrivals = stamps_in.recv()
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()
        stamps_in.close()
        stamps_out.close()
    return {
        name: Figure(b - a for a, b in zip(starts[name], arrivals[name], strict=True))
        for name in channels
    }


def async_result_channel(keep: bool, url: str | None = None) -> Callable[[int], Channel]:
    """A fresh AsyncResult per value, made in the parent and pickled to the child
    before the handoff (as a Pool task receives it); *keep*: both sides keep
    every result and value, else each drops them after use.  *url*: on that
    backend (see mpevent.connect), else in shared memory."""

    def make(count: int) -> Channel:
        import pickle

        from ..._connect import connect

        make_result: Any = connect(url or "local://").AsyncResult
        handles_in, handles_out = CTX.Pipe(duplex=False)
        current: list[Any] = []
        kept: list[Any] = []

        def prepare(i: int) -> None:
            result = make_result()
            handles_out.send_bytes(pickle.dumps(result))
            if not keep:
                current.clear()
            current.append(result)

        def receive(i: int) -> float:
            result = pickle.loads(handles_in.recv_bytes())
            value = result.get()
            stamp = time.perf_counter()
            if keep:
                kept.append((result, value))
            return stamp

        def send(i: int, value: Any) -> None:
            current[-1].set(value)

        return receive, send, prepare

    return make


def _receiver(get: Callable[[], Any], keep: bool) -> Callable[[int], float]:
    """A channel's receive(): take a value, stamp its arrival, keep it if asked."""
    kept: list[Any] = []

    def receive(i: int) -> float:
        value = get()
        stamp = time.perf_counter()
        if keep:
            kept.append(value)
        return stamp

    return receive


def _pipe_channel(keep: bool) -> Callable[[int], Channel]:
    def make(count: int) -> Channel:
        receiver, sender = CTX.Pipe(duplex=False)
        return _receiver(receiver.recv, keep), (lambda i, value: sender.send(value))

    return make


def _queue_channel(keep: bool) -> Callable[[int], Channel]:
    def make(count: int) -> Channel:
        queue = CTX.Queue()
        return _receiver(queue.get, keep), (lambda i, value: queue.put(value))

    return make


def _shared_memory_channel(keep: bool) -> Callable[[int], Channel]:
    """SharedMemory by hand: create, copy in, send the name, attach, copy out, unlink."""

    def make(count: int) -> Channel:
        from multiprocessing import resource_tracker, shared_memory

        # The forked receiver must report its unlinks to our tracker, not its own.
        resource_tracker.ensure_running()
        names_in, names_out = CTX.Pipe(duplex=False)
        kept: list[Any] = []

        def receive(i: int) -> float:
            name, size, dtype = names_in.recv()
            segment = shared_memory.SharedMemory(name)
            buffer: Any = segment.buf
            if dtype is None:
                value: Any = bytes(buffer[:size])
            else:
                import numpy

                value = numpy.frombuffer(buffer, dtype, size // numpy.dtype(dtype).itemsize)
                value = value.copy()
            del buffer
            segment.close()
            segment.unlink()  # the receiver is the last user
            stamp = time.perf_counter()
            if keep:
                kept.append(value)
            return stamp

        def send(i: int, value: Any) -> None:
            data = memoryview(value).cast("B")
            segment = shared_memory.SharedMemory(create=True, size=max(1, data.nbytes))
            target: Any = segment.buf
            target[: data.nbytes] = data
            del target
            dtype = getattr(value, "dtype", None)
            # The receiver unlinks it, which also tells the resource tracker
            # (one per process tree, since the receiver is forked).
            names_out.send((segment.name, data.nbytes, None if dtype is None else dtype.str))
            segment.close()

        return receive, send

    return make


_pool_value: Any = None
_pool_go: Any = None


def _pool_init(go: Any, kind: str, size: int) -> None:
    global _pool_value, _pool_go
    _pool_value, _pool_go = make_value(kind, size), go


def _pool_task(i: int) -> Any:
    """A Pool task whose value is ready: spin until handoff *i* starts, return it.

    Spinning (not blocking) keeps a wakeup out of Pool's figure: what is
    measured is the result's way back, ``apply_async(...).get()``.  It
    yields the CPU at each turn, so the receiver's threads can run.
    """
    while _pool_go.value < i:
        os.sched_yield()
    return _pool_value


def _pool_channel(keep: bool, kind: str, size: int) -> Callable[[int], Channel]:
    """multiprocessing.Pool results: the receiver's apply_async(...).get() of a ready value."""

    def make(count: int) -> Channel:
        go = CTX.Value("q", -1, lock=False)
        pool: list[Any] = []
        kept: list[Any] = []

        def receive(i: int) -> float:
            if not pool:  # in the receiver, whose Pool it is (the first handoff pays)
                pool.append(CTX.Pool(1, _pool_init, (go, kind, size)))
            value = pool[0].apply_async(_pool_task, (i,)).get(60)
            stamp = time.perf_counter()
            if keep:
                kept.append(value)
            if i == count - 1:
                pool[0].terminate()
            return stamp

        def send(i: int, value: Any) -> None:
            go.value = i

        return receive, send

    return make


def make_value(kind: str, size: int) -> Any:
    if kind == "numpy":
        import numpy

        return numpy.ones(size, dtype=numpy.uint8)
    return bytes(size)


def value_handoff(
    count: int,
    trials: int = 3,
    sizes: list[int] | None = None,
    kinds: tuple[str, ...] = ("bytes", "numpy"),
    modes: tuple[str, ...] = ("dropped",),
) -> dict[str, dict[str, float]]:
    """Median handoff seconds per (size, kind, mode) row and peer.

    Rows are labelled like ``"1 MiB bytes dropped"``.  Every peer gets a
    fresh channel per row; the peers take turns handoff by handoff.
    """
    try:
        import numpy  # noqa: F401
    except ImportError:
        kinds = tuple(kind for kind in kinds if kind != "numpy")
    table: dict[str, dict[str, float]] = {}
    for size in sizes or VALUE_SIZES:
        reps = count if size < MiB else max(3, count // (10 if size < 16 * MiB else 40))
        for kind in kinds:
            value = make_value(kind, size)
            for mode in modes:
                keep = mode == "kept"
                peers = {
                    "mpevent.AsyncResult": async_result_channel(keep),
                    "multiprocessing.Pipe": _pipe_channel(keep),
                    "multiprocessing.Queue": _queue_channel(keep),
                    "SharedMemory by hand": _shared_memory_channel(keep),
                    "multiprocessing.Pool": _pool_channel(keep, kind, size),
                }
                runs = [handoffs(peers, value, reps) for _ in range(trials)]
                table[f"{size_label(size)} {kind} {mode}"] = medians(runs)
    return table


def report_value_handoff(
    count: int, trials: int = 3, sizes: list[int] | None = None, **options: Any
) -> dict[str, dict[str, float]]:
    table = value_handoff(count, trials, sizes, **options)
    title = "value handoff to a process blocked in get()/recv(), median (fork)"
    print_rows(title, table, "multiprocessing.Pipe", 22, short=True)
    return table
