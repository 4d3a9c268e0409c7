"""Measurements of mpevent beside its peers, shared by the demo and benchmarks/.

Ping-pong: A sets e1 and waits on e2; B waits on e1, clears it and sets e2;
A clears e2.  The peers run interleaved, trial by trial, so the rows of one
run see the same machine; compare ratios within a run, not across runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..event import Event

CTX = mp.get_context("fork")


class Figure(float):
    """The median of timing samples (seconds), which also keeps their spread.

    It is a float wherever a figure is used (ratios, tables, the plot); the
    JSON also gets each figure's quartiles (see ``_benchrun``).
    """

    samples: tuple[float, ...]

    def __new__(cls, samples: Iterable[float]) -> Figure:
        ordered = tuple(sorted(samples))
        figure = super().__new__(cls, statistics.median(ordered))
        figure.samples = ordered
        return figure

    @property
    def spread(self) -> tuple[float, float]:
        """The first and third quartiles of the samples."""
        if len(self.samples) < 2:
            return float(self), float(self)
        low, _, high = statistics.quantiles(self.samples, n=4)
        return low, high


def _turns(names: list[str], i: int) -> list[str]:
    # Rotate who goes first, so no peer always follows the same one.
    k = i % len(names)
    return names[k:] + names[:k]


def _event_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def _semaphore_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.acquire()
        pong.release()


def _event_pair(
    make: Callable[[], Any],
) -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping, pong = make(), make()

    def round_trip() -> None:
        ping.set()
        pong.wait()
        pong.clear()

    return _event_peer, ping, pong, round_trip


def _semaphore_pair() -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping, pong = CTX.Semaphore(0), CTX.Semaphore(0)

    def round_trip() -> None:
        ping.release()
        pong.acquire()

    return _semaphore_peer, ping, pong, round_trip


def _spin() -> None:
    import os

    os.nice(19)
    while True:
        pass


def ping_pong(rounds: int, trials: int, loaded: bool = False) -> dict[str, float]:
    """Median seconds per round trip of each peer.

    Every peer's partner process runs from start to end; the peers take
    turns in chunks of rounds/20, so all see the same moments of a noisy
    machine.  *trials* scales the number of chunks.  *loaded*: a
    lowest-priority spinner runs on every CPU meanwhile, as on a busy host.
    """
    import os

    spinners = [CTX.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    if loaded:
        for spinner in spinners:
            spinner.start()
    try:
        return _ping_pong(rounds, trials)
    finally:
        for spinner in spinners:
            if spinner.pid is not None:
                spinner.kill()
                spinner.join(10)


def _pipe_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.recv_bytes()
        pong.send_bytes(b"")


def _pipe_pair() -> tuple[Callable[..., None], Any, Any, Callable[[], None]]:
    ping_in, ping_out = CTX.Pipe(duplex=False)
    pong_in, pong_out = CTX.Pipe(duplex=False)

    def round_trip() -> None:
        ping_out.send_bytes(b"")
        pong_in.recv_bytes()

    return _pipe_peer, ping_in, pong_out, round_trip


def _ping_pong(rounds: int, trials: int) -> dict[str, float]:
    manager = CTX.Manager()  # a server process: its Event is a proxy
    try:
        return _ping_pong_peers(rounds, trials, manager)
    finally:
        manager.shutdown()


def _ping_pong_peers(rounds: int, trials: int, manager: Any) -> dict[str, float]:
    pairs = {
        "raw semaphore pair": _semaphore_pair(),
        "mpevent.Event": _event_pair(Event),
        "multiprocessing.Event": _event_pair(CTX.Event),
        "Manager().Event()": _event_pair(manager.Event),
        "multiprocessing.Pipe pair": _pipe_pair(),
    }
    chunk = max(rounds // 20, 10)
    chunks = 20 * trials
    warmup = 200
    partners = [
        CTX.Process(target=target, args=(ping, pong, warmup + chunk * chunks))
        for target, ping, pong, _ in pairs.values()
    ]
    for partner in partners:
        partner.start()
    try:
        return interleaved_rounds(
            {name: pair[3] for name, pair in pairs.items()}, warmup, chunk, chunks
        )
    finally:
        for partner in partners:
            partner.join(30)
            if partner.is_alive():
                partner.kill()


def interleaved_rounds(
    round_trips: Mapping[str, Callable[[], None]], warmup: int, chunk: int, chunks: int
) -> dict[str, float]:
    """Median seconds per round trip of each peer, the peers taking turns chunk by chunk."""
    samples: dict[str, list[float]] = {name: [] for name in round_trips}
    for round_trip in round_trips.values():
        for _ in range(warmup):
            round_trip()
    names = list(round_trips)
    for i in range(chunks):
        for name in _turns(names, i):
            round_trip = round_trips[name]
            start = time.perf_counter()
            for _ in range(chunk):
                round_trip()
            samples[name].append((time.perf_counter() - start) / chunk)
    return {name: Figure(values) for name, values in samples.items()}


def creation(count: int) -> float:
    """Seconds to create *count* Events (kept alive until the end)."""
    start = time.perf_counter()
    events = [Event() for _ in range(count)]
    elapsed = time.perf_counter() - start
    del events
    return elapsed


def _footprint_child(peer: str, count: int, out: Any) -> None:
    import gc
    import shutil
    import threading
    import timeit

    import psutil

    from ..asyncresult import AsyncResult

    spawn = mp.get_context("spawn")
    manager: Any = spawn.Manager() if peer == "Manager().Event()" else None
    processes = [psutil.Process()] + (
        [] if manager is None else [psutil.Process(manager._process.pid)]
    )
    make: Callable[[], Any] = {
        "mpevent.Event": Event,
        "mpevent.AsyncResult": AsyncResult,
        "multiprocessing.Event": spawn.Event,
        "Manager().Event()": lambda: manager.Event(),
        "threading.Event (one process)": threading.Event,
    }[peer]
    gc.collect()
    rss = sum(process.memory_info().rss for process in processes)
    shm = shutil.disk_usage("/dev/shm").used
    start = time.perf_counter()
    try:
        objects = [make() for _ in range(count)]
    except OSError as exc:  # e.g. out of memory mappings
        out.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    seconds = time.perf_counter() - start
    gc.collect()
    rss = sum(process.memory_info().rss for process in processes) - rss
    shm = shutil.disk_usage("/dev/shm").used - shm
    probe = getattr(objects[0], "is_set", None) or objects[0].ready
    calls = 10_000 if manager is not None else 1_000_000
    is_set = min(timeit.repeat(probe, number=calls, repeat=3)) / calls
    out.send(
        {
            "objects": len(objects),
            "memory": rss / len(objects),
            "shm": shm / len(objects),
            "create": seconds / len(objects),
            "is_set": is_set,
        }
    )
    del objects
    if manager is not None:
        manager.shutdown()


FOOTPRINT_COUNTS = {
    "mpevent.Event": 1_000_000,
    "mpevent.AsyncResult": 1_000_000,
    "multiprocessing.Event": 10_000,  # five semaphores, each its own mapping
    "Manager().Event()": 10_000,  # one round trip per object
    "threading.Event (one process)": 1_000_000,  # the in-process reference
}


def footprint(scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per peer: memory (all its processes' RSS), /dev/shm and creation time per object,
    and seconds per is_set() (ready() for AsyncResult).

    Each peer makes its objects in a fresh (spawned) process: a forked one
    would find this process's arena with pages already in place.
    """
    spawn = mp.get_context("spawn")
    table: dict[str, dict[str, Any]] = {}
    for peer, full in FOOTPRINT_COUNTS.items():
        count = max(1000, int(full * scale))
        receiver, sender = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_footprint_child, args=(peer, count, sender))
        child.start()
        try:
            table[peer] = receiver.recv() if receiver.poll(600) else {"error": "no answer"}
        finally:
            child.join(60)
            if child.is_alive():
                child.kill()
            receiver.close()
            sender.close()
    return table


def report_footprint(scale: float = 1.0) -> dict[str, dict[str, Any]]:
    table = footprint(scale)
    print("cost of being there, per object: memory (RSS of every process involved), /dev/shm,")
    print("creation time, is_set() (AsyncResult: ready()); each peer in a fresh process")
    for peer, row in table.items():
        if "error" in row:
            print(f"  {peer:30s} failed: {row['error']}")
            continue
        print(
            f"  {peer:30s} {row['memory']:7.0f} B memory {row['shm']:7.0f} B /dev/shm "
            f"{row['create'] * 1e6:8.2f} us to create {row['is_set'] * 1e9:8.1f} ns is_set()"
            f"   ({row['objects']:,} objects)"
        )
    return table


def report_ping_pong(rounds: int, trials: int) -> dict[str, float]:
    """Run ping_pong() on an idle and on a loaded machine; print both with ratios."""
    results: dict[str, float] = {}
    for loaded in (False, True):
        regime = "loaded (a nice-19 spinner per CPU)" if loaded else "idle"
        table = ping_pong(rounds, trials, loaded)
        base = table["raw semaphore pair"]
        print(f"ping-pong round trip, {regime}, median of {20 * trials} interleaved chunks (fork)")
        for name, seconds in table.items():
            print(f"  {name:24s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x raw semaphores")
        mp_ratio = table["multiprocessing.Event"] / table["mpevent.Event"]
        print(f"  mpevent.Event is {mp_ratio:.1f}x faster than multiprocessing.Event")
        suffix = " (loaded)" if loaded else ""
        results.update({name + suffix: seconds for name, seconds in table.items()})
    return results


def report_creation(count: int) -> float:
    seconds = creation(count)
    print(f"create {count:,} Events: {seconds:.2f} s ({seconds / count * 1e6:.2f} us each)")
    return seconds


# --- broadcast -----------------------------------------------------------------


def _broadcast_waiter(
    go: tuple[Any, Any], ready: Any, done: Any, stamps: Any, me: int, rounds: int
) -> None:
    for event in go:  # a raw pub/sub channel subscribes before it says it is ready
        getattr(event, "prepare", lambda: None)()
    for r in range(rounds):
        event = go[r % 2]
        ready.set()
        event.wait()
        stamps[me] = time.perf_counter()
        done.set()


def _broadcast(make: Callable[[], Any], waiters: int, rounds: int, ctx: Any = CTX) -> float:
    """Median seconds from one set() to the last of *waiters* processes running."""
    go = (make(), make())  # rounds alternate, so a round never sees the last one's set
    ready = [ctx.Event() for _ in range(waiters)]
    done = [ctx.Event() for _ in range(waiters)]
    stamps = ctx.Array("d", waiters, lock=False)
    children = [
        ctx.Process(target=_broadcast_waiter, args=(go, ready[i], done[i], stamps, i, rounds))
        for i in range(waiters)
    ]
    for child in children:
        child.start()
    samples: list[float] = []
    try:
        for r in range(rounds):
            for flag in ready:
                flag.wait(60)
                flag.clear()
            time.sleep(0.002 + 0.0002 * waiters)  # let every waiter block
            start = time.perf_counter()
            go[r % 2].set()
            for flag in done:
                flag.wait(60)
                flag.clear()
            go[r % 2].clear()
            samples.append(float(max(stamps)) - start)
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    return Figure(samples[1:] or samples)


BROADCAST_SIZES = [1, 2, 4, 8, 16, 32, 64]
QUICK_BROADCAST_SIZES = [1, 4, 16]


def broadcast(sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """Per N: median seconds until the last of N blocked processes runs, per peer."""
    peers: dict[str, Callable[[], Any]] = {
        "mpevent.Event": Event,
        "multiprocessing.Event": CTX.Event,
    }
    table: dict[str, dict[str, float]] = {}
    for waiters in sizes:
        row: dict[str, float] = {}
        for trial in range(2):  # peers alternate within the row
            order = list(peers) if trial % 2 == 0 else list(reversed(peers))
            for name in order:
                seconds = _broadcast(peers[name], waiters, max(3, rounds // 2))
                row[name] = min(row.get(name, seconds), seconds) if trial else seconds
        table[f"{waiters} waiters"] = row
    return table


def report_broadcast(sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    table = broadcast(sizes, rounds)
    title = "broadcast: one set() to the last of N blocked processes running, median (fork)"
    print_rows(title, table, "multiprocessing.Event", 11)
    return table


# --- value handoff -----------------------------------------------------------

KiB, MiB = 1 << 10, 1 << 20
# 100 B, then powers of four from 1 KiB to 64 MiB, and 32 MiB, which targets name.
VALUE_SIZES = [100, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB]
VALUE_SIZES += [32 * MiB, 64 * MiB]
QUICK_VALUE_SIZES = [100, 64 * KiB, MiB, 32 * MiB]


def size_label(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB} MiB"
    return f"{size // KiB} KiB" if size >= KiB else f"{size} B"


# (receive in the child, send in the parent); a channel may add a third
# callable that the parent runs, untimed, before each handoff.
Channel = tuple[Callable[..., Any], ...]


def _receive_all(
    receivers: dict[str, Callable[[int], Any]], ready: Any, count: int, stamps: Any
) -> None:
    arrivals: dict[str, list[float]] = {name: [] for name in receivers}
    for i in range(count):
        for name in _turns(list(receivers), i):
            ready.set()
            got = receivers[name](i)
            # A receiver may report the moment itself (a callback on another thread).
            arrivals[name].append(got if isinstance(got, float) else time.perf_counter())
            del got
    stamps.send(arrivals)


def _handoffs(
    makers: Mapping[str, Callable[[int], Channel]], value: Any, count: int
) -> dict[str, float]:
    """Median seconds from send/set in the parent to the blocked child holding the value.

    One child receives from every peer in turn, handoff by handoff, so all
    peers see the same moments of a noisy machine.
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
            for name in _turns(list(channels), i):
                channel = channels[name]
                if len(channel) > 2:
                    channel[2](i)  # untimed preparation (hand over a fresh handle)
                ready.wait(30)
                ready.clear()
                time.sleep(0.002)  # let the child block in receive
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


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per peer, the median (and spread) of every trial's samples together."""

    def samples(figure: float) -> tuple[float, ...]:
        return figure.samples if isinstance(figure, Figure) else (figure,)

    return {name: Figure(x for run in runs for x in samples(run[name])) for name in runs[0]}


def _async_result_channel(keep: bool, url: str | None = None) -> Callable[[int], Channel]:
    """A fresh AsyncResult per value, made in the parent and pickled to the child
    before the handoff (as a Pool task receives it); *keep*: both sides keep
    every result and value, else each drops them after use.  *url*: on that
    backend (see mpevent.connect), else in shared memory."""

    def make(count: int) -> Channel:
        import pickle

        from .._connect import connect

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
    _pool_value, _pool_go = _make_value(kind, size), go


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


def _make_value(kind: str, size: int) -> Any:
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
            value = _make_value(kind, size)
            for mode in modes:
                keep = mode == "kept"
                peers = {
                    "mpevent.AsyncResult": _async_result_channel(keep),
                    "multiprocessing.Pipe": _pipe_channel(keep),
                    "multiprocessing.Queue": _queue_channel(keep),
                    "SharedMemory by hand": _shared_memory_channel(keep),
                    "multiprocessing.Pool": _pool_channel(keep, kind, size),
                }
                runs = [_handoffs(peers, value, reps) for _ in range(trials)]
                table[f"{size_label(size)} {kind} {mode}"] = _medians(runs)
    return table


def print_rows(
    title: str, table: Mapping[str, Mapping[str, float]], base: str, width: int, short: bool = False
) -> None:
    """Print *title*, then per row each peer's median and its ratio to peer *base*.

    *short*: name peers by their last dotted part (``Pipe`` for ``multiprocessing.Pipe``).
    """
    print(title)
    for label, row in table.items():
        floor = row.get(base)
        cells = "  ".join(
            f"{name.split('.')[-1] if short else name} {seconds * 1e6:9.1f} us"
            + (f" ({seconds / floor:4.2f}x)" if floor else "")
            for name, seconds in row.items()
        )
        print(f"  {label:>{width}}: {cells}")


def report_value_handoff(
    count: int, trials: int = 3, sizes: list[int] | None = None, **options: Any
) -> dict[str, dict[str, float]]:
    table = value_handoff(count, trials, sizes, **options)
    title = "value handoff to a process blocked in get()/recv(), median (fork)"
    print_rows(title, table, "multiprocessing.Pipe", 22, short=True)
    return table


class _RayTaker:
    """A Ray actor that takes an array out of the object store."""

    def take(self, refs: list[Any]) -> float:
        import ray

        value = ray.get(refs[0])  # in a list, so Ray does not resolve it for us
        stamp = time.perf_counter()
        del value
        return stamp


def ray_handoff(count: int, sizes: list[int]) -> dict[str, dict[str, float]] | None:
    """NumPy arrays: ray.put() then an idle actor takes the array, beside mpevent.

    None if Ray is not installed.  mpevent's rows are measured before Ray
    starts (its threads make forking unsafe), Ray's after: blocks of one run.
    """
    try:
        import ray
    except ImportError:
        return None
    ours = {
        size: _handoffs(
            {"mpevent.AsyncResult": _async_result_channel(False)}, _make_value("numpy", size), count
        )["mpevent.AsyncResult"]
        for size in sizes
    }
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        taker: Any = ray.remote(_RayTaker).remote()
        table = {}
        for size in sizes:
            value = _make_value("numpy", size)
            ray.get(taker.take.remote([ray.put(value)]))  # warm the actor
            samples = []
            for _ in range(count):
                time.sleep(0.002)
                start = time.perf_counter()
                ref = ray.put(value)
                samples.append(ray.get(taker.take.remote([ref])) - start)
                del ref
            table[f"{size_label(size)} numpy"] = {
                "mpevent.AsyncResult": ours[size],
                "ray.put + actor get": Figure(samples),
            }
        return table
    finally:
        ray.shutdown()


def report_ray_handoff(count: int, sizes: list[int]) -> dict[str, dict[str, float]] | None:
    table = ray_handoff(count, sizes)
    if table is None:
        print("Ray's object store: not installed (pip install ray), skipped")
        return None
    title = "NumPy array handoff vs Ray's object store, median"
    print_rows(title, table, "ray.put + actor get", 14)
    return table


# --- wakeup paths ------------------------------------------------------------


def _event_wait_channel(count: int) -> Channel:
    events = [Event() for _ in range(count)]
    return (lambda i: events[i].wait()), (lambda i, _value: events[i].set())


def _mp_event_channel(count: int) -> Channel:
    events = [CTX.Event() for _ in range(count)]
    return (lambda i: events[i].wait()), (lambda i, _value: events[i].set())


def _callback_channel(count: int) -> Channel:
    import threading

    events = [Event() for _ in range(count)]

    def receive(i: int) -> float:
        stamp: list[float] = []
        ran = threading.Event()

        def callback(_obj: object) -> None:
            stamp.append(time.perf_counter())
            ran.set()

        events[i].rawlink(callback)
        ran.wait(30)
        return stamp[0]

    return receive, (lambda i, _value: events[i].set())


def _asyncio_channel(count: int) -> Channel:
    import asyncio

    events = [Event() for _ in range(count)]
    loop: list[asyncio.AbstractEventLoop] = []

    def receive(i: int) -> float:
        async def resumed() -> float:
            await events[i].wait_async(30)
            return time.perf_counter()

        if not loop:
            loop.append(asyncio.new_event_loop())
        return loop[0].run_until_complete(resumed())

    return receive, (lambda i, _value: events[i].set())


def _gevent_channel(count: int) -> Channel:
    events = [Event() for _ in range(count)]

    def receive(i: int) -> float:
        import gevent

        def waiting_greenlet() -> float:
            events[i].wait(30)  # only this greenlet blocks
            return time.perf_counter()

        stamp: float = gevent.spawn(waiting_greenlet).get()
        return stamp

    return receive, (lambda i, _value: events[i].set())


def wakeup_latency(count: int, trials: int = 3) -> dict[str, float]:
    """Median seconds from set() in one process to each kind of waiter in another."""
    import importlib.util

    peers = {
        "mpevent Event.wait()": _event_wait_channel,
        "mpevent rawlink callback": _callback_channel,
        "mpevent asyncio wait_async()": _asyncio_channel,
        "multiprocessing.Event.wait()": _mp_event_channel,
    }
    table = _medians([_handoffs(peers, b"", count) for _ in range(trials)])
    if importlib.util.find_spec("gevent") is not None:
        # A receiver of its own: once a gevent hub runs in a thread, every
        # wait of that thread is cooperative, and the other peers would be too.
        gevent = {"mpevent in a gevent greenlet": _gevent_channel}
        table.update(_medians([_handoffs(gevent, b"", count) for _ in range(trials)]))
    return table


def report_wakeup_latency(count: int, trials: int = 3) -> dict[str, float]:
    table = wakeup_latency(count, trials)
    base = table["mpevent Event.wait()"]
    print("wakeup latency from set() in one process to a waiter in another, median (fork)")
    for name, seconds in table.items():
        print(f"  {name:30s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x Event.wait()")
    return table


def script(description: str | None, report: Callable[[int, int], object], count: int) -> int:
    """The command line of a benchmarks/ script that runs one report."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=count, help="measurements per trial")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials per peer")
    args = parser.parse_args()
    report(args.count, args.trials)
    return 0


# --- the cost of waiting ------------------------------------------------------


def _idle_waiters(event: Event, threads: int, parked: Any) -> None:
    import threading

    workers = [threading.Thread(target=event.wait) for _ in range(threads)]
    for worker in workers:
        worker.start()
    parked.set()
    for worker in workers:
        worker.join()


def _switches(pid: int) -> int:
    import os

    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.split(":")[0] in (
                        "voluntary_ctxt_switches",
                        "nonvoluntary_ctxt_switches",
                    ):
                        total += int(line.split()[-1])
        except FileNotFoundError:
            continue
    return total


def _cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cost(processes: int = 4, threads: int = 50, seconds: float = 10.0) -> dict[str, float]:
    """Wakeups per second and CPU seconds of blocked waiters, over *seconds*.

    *processes* children each park *threads* threads in Event.wait() with
    no timeout; their context switches (every thread's, from
    /proc/<pid>/task/*/status) and CPU time are read before and after.
    """
    event = Event()
    ready = [CTX.Event() for _ in range(processes)]
    children = [
        CTX.Process(target=_idle_waiters, args=(event, threads, parked)) for parked in ready
    ]
    for child in children:
        child.start()
    try:
        for parked in ready:
            parked.wait(60)
        deadline = time.monotonic() + 30
        while event._record.info()["waiters"] < processes * threads:
            if time.monotonic() > deadline:
                raise RuntimeError("the waiters did not all park within 30 s")
            time.sleep(0.01)
        time.sleep(0.5)  # let the parking settle
        pids = [child.pid for child in children if child.pid is not None]
        switches = sum(_switches(pid) for pid in pids)
        cpu = sum(_cpu_seconds(pid) for pid in pids)
        time.sleep(seconds)
        switches = sum(_switches(pid) for pid in pids) - switches
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu
    finally:
        event.set()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    return {"wakeups per second": switches / seconds, "CPU seconds": cpu}


def report_idle_cost(
    processes: int = 4, threads: int = 50, seconds: float = 10.0
) -> dict[str, float]:
    result = idle_cost(processes, threads, seconds)
    print(
        f"{processes * threads} threads blocked in Event.wait() in {processes} processes, "
        f"over {seconds:g} s: {result['wakeups per second']:.1f} wakeups/s in total, "
        f"{result['CPU seconds']:.2f} s of CPU"
    )
    return result
