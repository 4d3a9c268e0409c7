"""Across machines: the Redis backend beside a raw Redis pair, Dask and shared memory.

Ping-pong, broadcast to N processes and value handoff through one Redis
server (or cluster), for ``python -m mpevent bench --url URL`` and
``benchmarks/across_machines.py``.  The floors are raw Redis: two processes doing
RPUSH / BLPOP on two lists (ping-pong, values), one PUBLISH to N
subscribers (broadcast).  Peers run interleaved in one run.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from ._common import Figure, print_rows

CTX = mp.get_context("spawn")  # the partner shares nothing but the URL


def _raw_partner(url: str, rounds: int, ping: str, pong: str) -> None:
    import redis

    client: Any = redis.Redis.from_url(url)
    for _ in range(rounds):
        client.blpop([ping])
        client.rpush(pong, b"")


def _event_partner(url: str, rounds: int, ping: Any, pong: Any) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def ping_pong(url: str, rounds: int, trials: int) -> dict[str, float]:
    """Median seconds per round trip: mpevent on *url*, the raw pair, shared memory."""
    import uuid

    import redis

    import mpevent

    from ._common import interleaved_rounds

    backend: Any = mpevent.connect(url)  # a RedisBackend: its connection is used below
    client: Any = redis.Redis.from_url(url) if not backend.connection.cluster else None
    tag = uuid.uuid4().hex
    ping_key, pong_key = f"bench:{{{tag}}}:ping", f"bench:{{{tag}}}:pong"
    peers: dict[str, tuple[Callable[..., None], tuple[Any, ...], Callable[[], None]]] = {}
    if client is not None:

        def raw_round() -> None:
            client.rpush(ping_key, b"")
            client.blpop([pong_key])

        peers["raw RPUSH/BLPOP pair"] = (_raw_partner, (ping_key, pong_key), raw_round)
    remote = (backend.Event(), backend.Event())
    local = (mpevent.Event(), mpevent.Event())
    for name, (ping, pong) in (("mpevent.Event on Redis", remote), ("mpevent.Event (shm)", local)):

        def event_round(ping: Any = ping, pong: Any = pong) -> None:
            ping.set()
            pong.wait()
            pong.clear()

        peers[name] = (_event_partner, (ping, pong), event_round)
    chunk = max(rounds // 10, 5)
    chunks = 10 * trials
    partners = [
        CTX.Process(target=target, args=(url, chunk * chunks + 20, *args))
        for target, args, _ in peers.values()
    ]
    for partner in partners:
        partner.start()
    try:
        return interleaved_rounds(
            {name: peer[2] for name, peer in peers.items()}, 20, chunk, chunks
        )
    finally:
        for partner in partners:
            partner.join(60)
            if partner.is_alive():
                partner.kill()
        backend.close()
        if client is not None:
            client.close()


def _timed_partner(url: str, rounds: int, ping: Any, pong: Any, cpu: Any) -> None:
    """The ping-pong partner that reports its thread's CPU time for the rounds."""
    started = time.thread_time()
    _event_partner(url, rounds, ping, pong)
    cpu.put(time.thread_time() - started)


def where_a_round_goes(url: str, rounds: int = 2000) -> dict[str, float]:
    """Microseconds per ping-pong round: wall, client CPU (both sides' waiting
    threads), the server's CPU (commandstats), and what is left, waiting on
    sockets and schedulers.  Also the server's calls per round by command."""
    import redis

    import mpevent

    backend: Any = mpevent.connect(url)
    admin: Any = redis.Redis.from_url(url)
    try:
        ping, pong = backend.Event(), backend.Event()
        cpu: Any = CTX.Queue()
        partner = CTX.Process(target=_timed_partner, args=(url, rounds, ping, pong, cpu))
        partner.start()
        ping.set()  # a first round, outside the counts: both sides connected
        pong.wait(60)
        pong.clear()
        admin.config_resetstat()
        wall, mine = time.perf_counter(), time.thread_time()
        for _ in range(rounds - 1):
            ping.set()
            pong.wait()
            pong.clear()
        wall, mine = time.perf_counter() - wall, time.thread_time() - mine
        stats = admin.info("commandstats")
        theirs = cpu.get(timeout=60)
        partner.join(60)
    finally:
        backend.close()
        admin.close()
    per = 1e6 / (rounds - 1)
    server = sum(stat["usec"] for stat in stats.values()) / (rounds - 1)
    figures = {
        "wall": wall * per,
        "client CPU, this side": mine * per,
        "client CPU, the partner (its whole run)": theirs * per,
        "server CPU": server,
    }
    figures["waiting (wall - this side - server)"] = (
        figures["wall"] - figures["client CPU, this side"] - server
    )
    for name, stat in sorted(stats.items()):
        if name.startswith("cmdstat_"):
            figures[f"calls/round {name[8:]}"] = stat["calls"] / (rounds - 1)
    return figures


def _claim_and_die(result: Any, claimed: Any) -> None:
    import os
    import signal

    result.claim()
    claimed.set()
    os.kill(os.getpid(), signal.SIGKILL)


def _waiter_sees_death(result: Any, ready: Any, seen: Any) -> None:
    import mpevent

    ready.set()
    try:
        result.get(timeout=60)
    except mpevent.ProcessDied:
        seen.put(time.time())


def claimer_death(url: str, lease: float, waiters: int = 4) -> list[float]:
    """Seconds from a claimer's SIGKILL to each of *waiters* processes raising
    ProcessDied, with a lease of *lease* seconds."""
    import mpevent

    context = mp.get_context("fork")
    separator = "&" if "?" in url else "?"
    backend: Any = mpevent.connect(f"{url}{separator}lease={lease:g}")
    try:
        result, claimed = backend.AsyncResult(), backend.Event()
        seen: Any = context.Queue()
        readies = [context.Event() for _ in range(waiters)]
        watchers = [
            context.Process(target=_waiter_sees_death, args=(result, ready, seen))
            for ready in readies
        ]
        for watcher in watchers:
            watcher.start()
        for ready in readies:
            ready.wait(60)
        claimer = context.Process(target=_claim_and_die, args=(result, claimed))
        claimer.start()
        claimed.wait(60)
        claimer.join(60)
        killed = time.time()  # the kill came before the join returned
        delays = sorted(seen.get(timeout=60) - killed for _ in watchers)
        for watcher in watchers:
            watcher.join(60)
        return delays
    finally:
        backend.close()


def _redis_result_channel(url: str, keep: bool = False) -> Callable[[int], Any]:
    """A fresh AsyncResult on the server per value, pickled to the reader beforehand;
    *keep*: both sides keep every result and value (as the shared-memory row does)."""
    from .values import async_result_channel

    return async_result_channel(keep, url)


def _raw_list_channel(url: str) -> Callable[[int], Any]:
    """The floor: RPUSH the value, BLPOP it in the reader (one connection, kept)."""

    def make(count: int) -> Any:
        import uuid

        import redis

        key = f"bench:{{{uuid.uuid4().hex}}}:values"
        client: Any = redis.Redis.from_url(url)
        readers: list[Any] = []  # the reader's connection, made in the reader

        def receive(i: int) -> float:
            if not readers:
                readers.append(redis.Redis.from_url(url))
            value = readers[0].blpop([key])
            stamp = time.perf_counter()
            if i == count - 1:
                readers.pop().close()
            del value
            return stamp

        return receive, (lambda i, value: client.rpush(key, bytes(value)))

    return make


VALUE_SIZES = [100, 1 << 20, 32 << 20]
# Seconds before each send: a get() on a fresh result makes three round trips
# before it blocks (a read, the subscription, the state), which on this VM
# took longer than the 2 ms of shared memory's handoffs.
SETTLE_VALUE = 0.01


# --- broadcast ----------------------------------------------------------------


class _RawChannel:
    """The broadcast floor: PUBLISH once, every subscriber reads one message.

    Duck-types what the broadcast waiters use of an Event: the setter's
    ``set()`` publishes, a waiter ``prepare()``s (subscribes, confirmed)
    before it says it is ready, then each ``wait()`` reads one message.
    """

    def __init__(self, url: str) -> None:
        import uuid

        self.url = url
        self.channel = f"bench:{{{uuid.uuid4().hex}}}:go"
        self._client: Any = None
        self._subscription: Any = None

    def __getstate__(self) -> dict[str, str]:
        return {"url": self.url, "channel": self.channel}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.url, self.channel = state["url"], state["channel"]
        self._client = self._subscription = None

    def _connection(self) -> Any:
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self.url)
        return self._client

    def prepare(self) -> None:
        self._subscription = self._connection().pubsub()
        self._subscription.subscribe(self.channel)
        while self._subscription.get_message(timeout=30) is None:
            pass  # the subscription's confirmation

    def set(self) -> None:
        self._connection().publish(self.channel, b"")

    def clear(self) -> None:
        """Nothing to lower: a message is read once."""

    def wait(self) -> bool:
        while True:
            message = self._subscription.get_message(timeout=60)
            if message is not None and message["type"] == "message":
                return True


BROADCAST_SIZES = [1, 4, 16, 64]
# Seconds per waiter before each set(): a wait's start reads the state, one
# round trip per waiter through one server, which on this 2-CPU VM can take
# longer than shared memory's 0.2 ms each; a wait that began after the set()
# would be measured as a slow wakeup.
SETTLE = 0.002


def broadcast(url: str, sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """Per N: median seconds from one set() to the last of N processes (spawned) running."""
    import mpevent

    from .broadcast import broadcast_round

    backend: Any = mpevent.connect(url)  # a RedisBackend: its connection is used below
    peers: dict[str, Callable[[], Any]] = {"mpevent.Event on Redis": backend.Event}
    if not backend.connection.cluster:
        peers["raw PUBLISH/SUBSCRIBE"] = lambda: _RawChannel(url)
    table: dict[str, dict[str, float]] = {}
    try:
        for waiters in sizes:
            row: dict[str, float] = {}
            for trial in range(2):  # peers alternate within the row
                order = list(peers) if trial % 2 == 0 else list(reversed(peers))
                for name in order:
                    seconds = broadcast_round(
                        peers[name], waiters, max(3, rounds // 2), CTX, settle=SETTLE
                    )
                    row[name] = min(row.get(name, seconds), seconds) if trial else seconds
            table[f"{waiters} waiters"] = row
    finally:
        backend.close()
    return table


# --- Dask, against a real scheduler process --------------------------------------


def _dask_partner(address: str, rounds: int, ping_name: str, pong_name: str) -> None:
    from distributed import Client, Event

    with Client(address) as client:
        ping, pong = Event(ping_name, client), Event(pong_name, client)
        for _ in range(rounds):
            ping.wait()
            ping.clear()
            pong.set()


def _dask_reader(address: str, names: list[str], stamps: Any) -> None:
    from distributed import Client, Variable

    with Client(address) as client:
        arrivals = []
        for name in names:
            Variable(name, client).get()  # blocks until set
            arrivals.append(time.perf_counter())
        stamps.send(arrivals)


def dask_peers(rounds: int, count: int) -> dict[str, float] | None:
    """Dask's distributed.Event ping-pong and a 100 B Variable handoff; None without Dask."""
    try:
        from distributed import Client, Event, Variable
    except ImportError:
        return None
    import shutil
    import socket
    import subprocess
    import sys
    import uuid

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dask = shutil.which("dask") or sys.executable
    command = (
        [dask]
        if dask != sys.executable
        else [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    )
    scheduler = subprocess.Popen(
        [*command, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        if dask != sys.executable
        else [*command, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}"
    try:
        with Client(address, timeout=30) as client:
            tag = uuid.uuid4().hex
            ping, pong = Event(f"ping-{tag}", client), Event(f"pong-{tag}", client)
            partner = CTX.Process(
                target=_dask_partner, args=(address, rounds + 5, f"ping-{tag}", f"pong-{tag}")
            )
            partner.start()
            samples = []
            for i in range(rounds + 5):
                start = time.perf_counter()
                ping.set()
                pong.wait()
                pong.clear()
                if i >= 5:
                    samples.append(time.perf_counter() - start)
            partner.join(60)
            names = [f"value-{tag}-{i}" for i in range(count)]
            stamps_in, stamps_out = CTX.Pipe(duplex=False)
            reader = CTX.Process(target=_dask_reader, args=(address, names, stamps_out))
            reader.start()
            time.sleep(3)  # the reader connects and blocks in get()
            starts = []
            for name in names:
                time.sleep(0.01)
                starts.append(time.perf_counter())
                Variable(name, client).set(b"x" * 100)
            arrivals = stamps_in.recv()
            reader.join(60)
        handoffs = [b - a for a, b in zip(starts, arrivals, strict=True)]
        return {
            "Dask distributed.Event ping-pong": Figure(samples),
            "Dask Variable 100 B handoff": Figure(handoffs),
        }
    finally:
        scheduler.terminate()
        scheduler.wait(30)


def value_handoff(url: str, count: int) -> dict[str, dict[str, float]]:
    """Median handoff seconds per size: mpevent on Redis, the raw pair, shared memory."""
    from ._common import size_label
    from .values import async_result_channel, handoffs

    table = {}
    for size in VALUE_SIZES:
        peers = {
            "mpevent.AsyncResult on Redis": _redis_result_channel(url),
            "mpevent.AsyncResult on Redis, kept": _redis_result_channel(url, keep=True),
            "raw RPUSH/BLPOP pair": _raw_list_channel(url),
            "mpevent.AsyncResult (shm)": async_result_channel(False),
        }
        reps = count if size < (1 << 20) else max(3, count // 10)
        table[size_label(size)] = handoffs(peers, bytes(size), reps, settle=SETTLE_VALUE)
    return table


def report(url: str, rounds: int = 200, trials: int = 3) -> dict[str, Any]:
    from ..._urls import public_url

    table = ping_pong(url, rounds, trials)
    print(f"ping-pong round trip across a Redis server ({public_url(url)}), median")
    base = table.get("raw RPUSH/BLPOP pair")
    for name, seconds in table.items():
        ratio = f"   {seconds / base:5.2f}x the raw pair" if base else ""
        print(f"  {name:30s} {seconds * 1e6:9.1f} us{ratio}")
    print("where a round of mpevent's ping-pong goes, per round")
    breakdown = where_a_round_goes(url, max(200, rounds * 5))
    for name, figure in breakdown.items():
        unit = "" if name.startswith("calls") else " us"
        print(f"  {name:42s} {figure:9.1f}{unit}")
    for lease in (1.0, 3.0):
        delays = claimer_death(url, lease)
        print(
            f"claimed result, claimer SIGKILLed, lease {lease:g} s: ProcessDied in 4 waiting "
            f"processes after {delays[0]:.2f}-{delays[-1]:.2f} s"
        )
    sizes = BROADCAST_SIZES if rounds >= 100 else [1, 8]
    spread = broadcast(url, sizes, max(6, rounds // 20))
    title = "broadcast across the Redis server: one set() to the last of N processes running"
    print_rows(title, spread, "raw PUBLISH/SUBSCRIBE", 11)
    values = value_handoff(url, max(10, rounds // 4))
    title = "value handoff across the Redis server to a process blocked in get()/BLPOP, median"
    print_rows(title, values, "raw RPUSH/BLPOP pair", 7)
    dask = dask_peers(max(20, rounds // 10), 20)
    if dask is None:
        print("Dask: not installed (pip install 'dask[distributed]'), skipped")
    else:
        ours_pp = table["mpevent.Event on Redis"]
        ours_value = values["100 B"]["mpevent.AsyncResult on Redis"]
        print("beside Dask (a real `dask scheduler` process), median")
        for name, seconds in dask.items():
            ours = ours_pp if "ping-pong" in name else ours_value
            print(f"  {name:34s} {seconds * 1e6:9.1f} us   mpevent on Redis {ours / seconds:4.2f}x")
    return {
        "ping_pong": table,
        "round": breakdown,
        "broadcast": spread,
        "values": values,
        "dask": dask,
    }
