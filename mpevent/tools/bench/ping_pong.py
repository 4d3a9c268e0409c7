"""Ping-pong: two processes hand a flag back and forth, beside the stdlib's peers.

A sets e1 and waits on e2; B waits on e1, clears it and sets e2; A clears
e2.  Three regimes: an idle machine, a loaded one (a nice-19 spinner per
CPU) and every process pinned to one CPU (as ``taskset -c 0`` would).
Beside each time, the CPU both sides spent per round: spinning trades CPU
for latency, and this column shows the price.  "mpevent.Event, no spin"
is the same Event with ``MPEVENT_SPIN=0`` in both processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...event import Event
from ...shm import _native, _parking
from ._common import CTX, Figure, loaded_machine, turns

NO_SPIN = "mpevent.Event, no spin"
REGIMES = ("idle", "loaded", "pinned")
REGIME_TITLES = {
    "idle": "idle",
    "loaded": "loaded (a nice-19 spinner per CPU)",
    "pinned": "pinned to one CPU (taskset -c 0)",
}

# A peer: (partner body, its two objects, the timed round, spin limit or None).
Peer = tuple[Callable[..., None], Any, Any, Callable[[], None], int | None]


def _event_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def _semaphore_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.acquire()
        pong.release()


def _pipe_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        ping.recv_bytes()
        pong.send_bytes(b"")


def _event_pair(make: Callable[[], Any], spin: int | None = None) -> Peer:
    ping, pong = make(), make()

    def round_trip() -> None:
        ping.set()
        pong.wait()
        pong.clear()

    return _event_peer, ping, pong, round_trip, spin


def _semaphore_pair() -> Peer:
    ping, pong = CTX.Semaphore(0), CTX.Semaphore(0)

    def round_trip() -> None:
        ping.release()
        pong.acquire()

    return _semaphore_peer, ping, pong, round_trip, None


def _pipe_pair() -> Peer:
    ping_in, ping_out = CTX.Pipe(duplex=False)
    pong_in, pong_out = CTX.Pipe(duplex=False)

    def round_trip() -> None:
        ping_out.send_bytes(b"")
        pong_in.recv_bytes()

    return _pipe_peer, ping_in, pong_out, round_trip, None


def _partner(
    body: Callable[..., None], ping: Any, pong: Any, rounds: int, spin: int | None, cpu: Any
) -> None:
    """A peer's other process: its rounds, then its CPU seconds per round into *cpu*."""
    if spin is not None:
        _native.set_spin_limit(spin)
    start = time.process_time()
    body(ping, pong, rounds)
    cpu.value = (time.process_time() - start) / rounds


@contextlib.contextmanager
def _spin_limit(limit: int | None) -> Iterator[None]:
    """This process's spin limit set to *limit* (None: unchanged) for a turn."""
    if limit is None:
        yield
        return
    before = _native.spin_limit()
    _native.set_spin_limit(limit)
    try:
        yield
    finally:
        _native.set_spin_limit(before)


def ping_pong(rounds: int, trials: int, regime: str = "idle") -> dict[str, float]:
    """Median seconds per round trip of each peer, and its CPU seconds per round.

    Every peer's partner process runs from start to end; the peers take
    turns in chunks of rounds/20, so all see the same moments of a noisy
    machine.  *trials* scales the number of chunks.  The CPU of a peer is
    "<name> CPU": both processes' seconds per round (the timing side's
    median chunk, the partner's whole run).
    """
    if regime == "pinned":
        return _pinned(rounds, trials)
    with loaded_machine(regime == "loaded"):
        manager = CTX.Manager()  # a server process: its Event is a proxy
        try:
            return _ping_pong_peers(rounds, trials, manager)
        finally:
            manager.shutdown()


def _pinned_child(rounds: int, trials: int, out: Any) -> None:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    _native.set_spin_limit(_parking.SPIN_LIMIT)  # what an import under taskset finds
    table = ping_pong(rounds, trials, "idle")
    # Figures travel as their samples (a Figure is rebuilt from them).
    out.send({name: getattr(value, "samples", (value,)) for name, value in table.items()})


def _pinned(rounds: int, trials: int) -> dict[str, float]:
    """ping_pong() in a child pinned to one CPU, with its partners (they inherit it)."""
    receive, send = CTX.Pipe(duplex=False)
    child = CTX.Process(target=_pinned_child, args=(rounds, trials, send))
    child.start()
    try:
        send.close()
        if not receive.poll(1800):
            raise TimeoutError("the pinned ping-pong gave no result in 30 minutes")
        samples: dict[str, tuple[float, ...]] = receive.recv()
        return {name: Figure(values) for name, values in samples.items()}
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join(10)


def _ping_pong_peers(rounds: int, trials: int, manager: Any) -> dict[str, float]:
    chunk, chunks, warmup = _chunks(rounds, trials)
    peers: dict[str, Peer] = {
        "raw semaphore pair": _semaphore_pair(),
        "mpevent.Event": _event_pair(Event),
        NO_SPIN: _event_pair(Event, spin=0),
        "multiprocessing.Event": _event_pair(CTX.Event),
        "Manager().Event()": _event_pair(manager.Event),
        "multiprocessing.Pipe pair": _pipe_pair(),
    }
    return _run_peers(peers, chunk, chunks, warmup)


def _chunks(rounds: int, trials: int) -> tuple[int, int, int]:
    """(rounds per chunk, chunks, warm-up rounds) of *rounds* scaled by *trials*."""
    return max(rounds // 20, 10), 20 * trials, 200


def _run_peers(peers: dict[str, Peer], chunk: int, chunks: int, warmup: int) -> dict[str, float]:
    """Each peer's median seconds per round and "<name> CPU", the peers in turns."""
    total = warmup + chunk * chunks
    cpus = {name: CTX.Value("d", 0.0, lock=False) for name in peers}
    partners = [
        CTX.Process(target=_partner, args=(body, ping, pong, total, spin, cpus[name]))
        for name, (body, ping, pong, _, spin) in peers.items()
    ]
    for partner in partners:
        partner.start()
    times: dict[str, list[float]] = {name: [] for name in peers}
    spent: dict[str, list[float]] = {name: [] for name in peers}
    try:
        for _, _, _, round_trip, spin in peers.values():
            with _spin_limit(spin):
                for _ in range(warmup):
                    round_trip()
        names = list(peers)
        for i in range(chunks):
            for name in turns(names, i):
                round_trip, spin = peers[name][3], peers[name][4]
                with _spin_limit(spin):
                    cpu, start = time.process_time(), time.perf_counter()
                    for _ in range(chunk):
                        round_trip()
                    seconds = time.perf_counter() - start
                    spent[name].append((time.process_time() - cpu) / chunk)
                times[name].append(seconds / chunk)
    finally:
        for partner in partners:
            partner.join(60)
            if partner.is_alive():
                partner.kill()
                partner.join(10)
    table: dict[str, float] = {name: Figure(samples) for name, samples in times.items()}
    for name in peers:
        table[f"{name} CPU"] = Figure(spent[name]) + cpus[name].value
    return table


# --- a value there and back --------------------------------------------------

VALUE = b"x" * 100


def _result_peer(ping: Any, pong: Any, rounds: int) -> None:
    for i in range(rounds):
        pong[i].set(ping[i].get())


def _result_pair(total: int, spin: int | None = None) -> Peer:
    """A fresh AsyncResult each way per round, made beforehand and kept to the end."""
    from ...asyncresult import AsyncResult

    ping = [AsyncResult() for _ in range(total)]
    pong = [AsyncResult() for _ in range(total)]
    turn = iter(range(total))

    def round_trip() -> None:
        i = next(turn)
        ping[i].set(VALUE)
        pong[i].get()

    return _result_peer, ping, pong, round_trip, spin


def _bytes_peer(ping: Any, pong: Any, rounds: int) -> None:
    for _ in range(rounds):
        pong.send_bytes(ping.recv_bytes())


def _bytes_pipe_pair() -> Peer:
    ping_in, ping_out = CTX.Pipe(duplex=False)
    pong_in, pong_out = CTX.Pipe(duplex=False)

    def round_trip() -> None:
        ping_out.send_bytes(VALUE)
        pong_in.recv_bytes()

    return _bytes_peer, ping_in, pong_out, round_trip, None


def value_ping_pong(rounds: int, trials: int) -> dict[str, float]:
    """A 100 B value to a process already waiting for it, and back, in a tight loop."""
    chunk, chunks, warmup = _chunks(rounds, trials)
    total = warmup + chunk * chunks
    peers: dict[str, Peer] = {
        "multiprocessing.Pipe pair": _bytes_pipe_pair(),
        "mpevent.AsyncResult": _result_pair(total),
        "mpevent.AsyncResult, no spin": _result_pair(total, spin=0),
    }
    return _run_peers(peers, chunk, chunks, warmup)


def report_value_ping_pong(rounds: int, trials: int) -> dict[str, float]:
    table = value_ping_pong(rounds, trials)
    base = table["multiprocessing.Pipe pair"]
    print(
        "a 100 B value to a process waiting in get(), and back, in a tight loop, median of "
        f"{20 * trials} interleaved chunks (fork); CPU: both processes, per 100,000 rounds"
    )
    for name, seconds in table.items():
        if not name.endswith(" CPU"):
            cpu = table[f"{name} CPU"]
            print(
                f"  {name:30s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x Pipe"
                f"   CPU {cpu * 1e5:6.2f} s"
            )
    return table


# The floor of a spinning ping-pong: two processes in C, each spinning on
# one shared word until it holds its turn, then handing the turn back.  No
# futex, no Python, no lock: what two CPUs take to pass a cache line there
# and back.  Built with the system's C compiler when the benchmark runs.
_SPIN_FLOOR_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long rounds = atol(argv[1]);
    volatile uint32_t *turn = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *turn = 0;
    pid_t pid = fork();
    if (pid == 0) {
        for (long i = 0; i < rounds; i++) {
            while (__atomic_load_n(turn, __ATOMIC_ACQUIRE) != 1) __builtin_ia32_pause();
            __atomic_store_n(turn, 0, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < rounds; i++) {
        __atomic_store_n(turn, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(turn, __ATOMIC_ACQUIRE) != 0) __builtin_ia32_pause();
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    waitpid(pid, NULL, 0);
    printf("%.9f\n", ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9) / rounds);
    return 0;
}
"""


def spin_floor(rounds: int = 200_000) -> float | None:
    """Seconds per round trip of two C processes spinning on one word; None if unmeasurable.

    Needs a C compiler, x86-64 (the pause instruction) and two usable CPUs.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or os.uname().machine != "x86_64" or len(os.sched_getaffinity(0)) < 2:
        return None
    with tempfile.TemporaryDirectory() as directory:
        source, program = (
            os.path.join(directory, "spin_floor" + ".c"),
            os.path.join(directory, "floor"),
        )
        with open(source, "w") as file:
            file.write(_SPIN_FLOOR_C)
        subprocess.run([compiler, "-O2", source, "-o", program], check=True)
        runs = [
            float(
                subprocess.run(
                    [program, str(rounds)], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(5)
        ]
    return sorted(runs)[len(runs) // 2]


def report_ping_pong(rounds: int, trials: int) -> dict[str, dict[str, float]]:
    """Run ping_pong() idle, loaded and pinned; print each with ratios and CPU."""
    results: dict[str, dict[str, float]] = {}
    for regime in REGIMES:
        table = ping_pong(rounds, trials, regime)
        base = table["raw semaphore pair"]
        print(
            f"ping-pong round trip, {REGIME_TITLES[regime]}, median of {20 * trials} "
            "interleaved chunks (fork); CPU: both processes, per 100,000 rounds"
        )
        for name, seconds in table.items():
            if name.endswith(" CPU"):
                continue
            cpu = table[f"{name} CPU"]
            print(
                f"  {name:26s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x raw semaphores"
                f"   CPU {cpu * 1e5:6.2f} s"
            )
        mp_ratio = table["multiprocessing.Event"] / table["mpevent.Event"]
        spin_cpu = table["mpevent.Event CPU"] / table[f"{NO_SPIN} CPU"]
        print(
            f"  mpevent.Event is {mp_ratio:.1f}x faster than multiprocessing.Event; "
            f"its CPU is {spin_cpu:.2f}x that of no spin"
        )
        if regime == "idle":
            floor = spin_floor()
            if floor is None:
                print("  C spin floor: not measured (needs cc, x86-64 and two usable CPUs)")
            else:
                print(
                    f"  C spin floor (two processes spinning on one word) {floor * 1e6:6.3f} us;"
                    f" mpevent.Event is {table['mpevent.Event'] / floor:.1f}x that"
                )
        results[regime] = table
    return results
