"""Values to parked receivers: the handoff as users write it, and where its time goes.

Two shapes: the first with results kept by both sides or dropped by both
after use, the second kept:

* ``per peer``: one receiver *process per peer* (mpevent, a Pipe, a Queue,
  SharedMemory by hand), forked once with its channel (for mpevent: a list
  of fresh AsyncResults made before the fork), each blocked in
  ``get()``/``recv()``.  The parent hands one value to each peer in turn, in
  a shuffled order, sleeping 5 ms before each handoff, so every receiver is
  parked for tens of milliseconds between its own values.
* ``long-lived``: the same receivers, each reading a fresh kept result
  every 20 ms for two and a half times as long (the kept values pile up
  in the heap, as in a program that reads a result per task).

Latency is from just before ``set()``/``send()`` to the receiver holding the
whole object (it stamps shared memory, after dropping its handle when the
mode drops).  Beside each latency, per handoff: the minor faults and CPU
seconds of the sender's ``set()``/``send()`` and of the receiver's whole
wait-and-read (``getrusage``), so a regression of the kind issue 43 found
(fresh pages faulted on the woken side) shows as a number.
"""

from __future__ import annotations

import random
import resource
import time
from typing import Any

from ._common import CTX, Figure, KiB, MiB, size_label

PARKED_SIZES = [100, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 8 * MiB, 32 * MiB]
QUICK_PARKED_SIZES = [100, 64 * KiB, MiB, 32 * MiB]
PEERS = ("mpevent.AsyncResult", "multiprocessing.Pipe", "multiprocessing.Queue", "SharedMemory")
GAP = 0.005  # seconds before each handoff: each of the 4 receivers is parked ~20 ms


def _usage() -> tuple[float, float]:
    """(minor faults, CPU seconds) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_minflt), usage.ru_utime + usage.ru_stime


class _Peer:
    """One peer's channel: made in the parent before the fork, used on both sides."""

    def __init__(self, name: str, rounds: int, size: int, keep: bool) -> None:
        self.name, self.rounds, self.keep = name, rounds, keep
        self.kept: list[Any] = []
        if name == "mpevent.AsyncResult":
            import mpevent

            self.results: list[Any] = [mpevent.AsyncResult() for _ in range(rounds)]
        elif name == "multiprocessing.Pipe":
            self.inbox, self.outbox = CTX.Pipe(duplex=False)
        elif name == "multiprocessing.Queue":
            self.queue = CTX.Queue()
        else:
            from multiprocessing import shared_memory

            self.segment = shared_memory.SharedMemory(create=True, size=max(size, 1))
            self.buffer: memoryview = self.segment.buf  # type: ignore[assignment]
            self.inbox, self.outbox = CTX.Pipe(duplex=False)

    def wait(self, i: int) -> None:
        """In the receiver: block until value *i* can be read (the wakeup alone)."""
        if self.name == "mpevent.AsyncResult":
            # Not wait(): gevent's AsyncResult.wait() returns the value, so
            # it would read it too.  The wait alone, as get() does it.
            self.results[i]._wait_ready(None)
        elif self.name == "multiprocessing.Queue":
            self.queue._reader.poll(None)  # type: ignore[attr-defined]
        else:
            self.inbox.poll(None)

    def receive(self, i: int) -> Any:
        """In the receiver: value *i*, the whole object (after wait())."""
        if self.name == "mpevent.AsyncResult":
            value = self.results[i].get()
            if not self.keep:
                self.results[i] = None  # the receiver drops its handle before it stamps
            return value
        if self.name == "multiprocessing.Pipe":
            return self.inbox.recv()
        if self.name == "multiprocessing.Queue":
            return self.queue.get()
        length = self.inbox.recv()  # SharedMemory by hand: a length, then a copy out
        return bytes(self.buffer[:length])

    def send(self, i: int, value: bytes) -> None:
        """In the parent: hand value *i* over."""
        if self.name == "mpevent.AsyncResult":
            self.results[i].set(value)
            if not self.keep:
                self.results[i] = None
        elif self.name == "multiprocessing.Pipe":
            self.outbox.send(value)
        elif self.name == "multiprocessing.Queue":
            self.queue.put(value)
        else:
            self.buffer[: len(value)] = value
            self.outbox.send(len(value))

    def close(self) -> None:
        if self.name == "SharedMemory":
            self.buffer.release()
            self.segment.close()
            self.segment.unlink()
        elif self.name == "multiprocessing.Queue":
            self.queue.close()
            self.queue.join_thread()
        self.results = []


WARMUP = 2  # handoffs per peer left out of the faults and CPU (first touches, first slot)


def _receiver(peer: _Peer, stamps: Any, row: int, acks: Any, usage: Any) -> None:
    faults, cpu = _usage()
    base = 2 * row * peer.rounds
    for i in range(peer.rounds):
        if i == WARMUP:
            faults, cpu = _usage()
        peer.wait(i)
        stamps[base + 2 * i] = time.perf_counter()  # awake
        value = peer.receive(i)
        if peer.keep:
            peer.kept.append(value)
        del value
        stamps[base + 2 * i + 1] = time.perf_counter()  # holding the whole value
        acks.send_bytes(b"")
    after = _usage()
    usage[2 * row], usage[2 * row + 1] = after[0] - faults, after[1] - cpu


def parked_round(size: int, mode: str, rounds: int) -> dict[str, dict[str, float]]:
    """One run: per peer, its latency Figure and its faults and CPU per handoff."""
    keep = mode == "kept"
    value = bytes(size)
    peers = [_Peer(name, rounds, size, keep) for name in PEERS]
    stamps = CTX.Array("d", 2 * len(peers) * rounds, lock=False)
    usage = CTX.Array("d", 2 * len(peers), lock=False)
    acks = [CTX.Pipe(duplex=False) for _ in peers]
    children = [
        CTX.Process(target=_receiver, args=(peer, stamps, row, acks[row][1], usage))
        for row, peer in enumerate(peers)
    ]
    for child in children:
        child.start()
    starts = [[0.0] * rounds for _ in peers]
    ends = [[0.0] * rounds for _ in peers]
    sent = [[0.0, 0.0] for _ in peers]
    order = list(range(len(peers)))
    shuffle = random.Random(size)
    try:
        for i in range(rounds):
            shuffle.shuffle(order)
            for row in order:
                time.sleep(GAP)
                before = _usage()
                starts[row][i] = time.perf_counter()
                peers[row].send(i, value)
                ends[row][i] = time.perf_counter()
                after = _usage()
                if i >= WARMUP:
                    sent[row][0] += after[0] - before[0]
                    sent[row][1] += after[1] - before[1]
                if not acks[row][0].poll(60):
                    raise RuntimeError(f"the {peers[row].name} receiver stopped answering")
                acks[row][0].recv_bytes()
    finally:
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()
                child.join(5)
        for peer in peers:
            peer.close()
        for inbox, outbox in acks:
            inbox.close()
            outbox.close()
    table: dict[str, dict[str, float]] = {}
    counted = rounds - WARMUP
    for row, peer in enumerate(peers):
        awake = [stamps[2 * row * rounds + 2 * i] for i in range(rounds)]
        held = [stamps[2 * row * rounds + 2 * i + 1] for i in range(rounds)]
        table[peer.name] = {
            "latency": Figure(held[i] - starts[row][i] for i in range(rounds)),
            "in send": Figure(ends[row][i] - starts[row][i] for i in range(rounds)),
            "to awake": Figure(awake[i] - starts[row][i] for i in range(rounds)),
            "reading": Figure(held[i] - awake[i] for i in range(rounds)),
            "sender faults": sent[row][0] / counted,
            "sender CPU": sent[row][1] / counted,
            "receiver faults": usage[2 * row] / counted,
            "receiver CPU": usage[2 * row + 1] / counted,
        }
    return table


def parked_handoff(
    rounds: int = 40,
    sizes: list[int] | None = None,
    modes: tuple[str, ...] = ("kept", "dropped"),
    shapes: tuple[str, ...] = ("per peer", "long-lived"),
) -> dict[str, Any]:
    """Median latency per row and peer, and the accounting per handoff.

    Rows are labelled like ``"64 KiB kept, per peer"``; the accounting sits
    under ``"accounting"`` with the same labels (faults and CPU seconds per
    handoff, sender and receiver).
    """
    latency: dict[str, dict[str, float]] = {}
    accounting: dict[str, dict[str, dict[str, float]]] = {}
    for shape in shapes:
        for size in sizes or PARKED_SIZES:
            reps = rounds if size < 8 * MiB else max(WARMUP + 8, rounds // 4)
            if shape == "long-lived":
                reps = reps * 5 // 2
            for mode in modes if shape == "per peer" else ("kept",):
                label = f"{size_label(size)} {mode}, {shape}"
                table = parked_round(size, mode, reps)
                latency[label] = {peer: figures["latency"] for peer, figures in table.items()}
                accounting[label] = {
                    peer: {key: value for key, value in figures.items() if key != "latency"}
                    for peer, figures in table.items()
                }
    return {**latency, "accounting": accounting}


def report_parked_handoff(rounds: int = 40, sizes: list[int] | None = None, **options: Any) -> Any:
    results = parked_handoff(rounds, sizes, **options)
    print("values to receivers parked for milliseconds, median; ratio to a Pipe")
    print("(per handoff: us in send, to the receiver awake, reading; sender / receiver")
    print(" minor faults and CPU us)")
    for label, row in results.items():
        if label == "accounting":
            continue
        pipe = row["multiprocessing.Pipe"]
        print(f"  {label}")
        for peer, seconds in row.items():
            cost = results["accounting"][label][peer]
            print(
                f"    {peer.split('.')[-1]:12s} {seconds * 1e6:9.1f} us ({seconds / pipe:4.2f}x)"
                f"  {cost['in send'] * 1e6:7.1f} {cost['to awake'] * 1e6:7.1f}"
                f" {cost['reading'] * 1e6:7.1f}"
                f"  faults {cost['sender faults']:6.1f} / {cost['receiver faults']:6.1f}"
                f"  CPU {cost['sender CPU'] * 1e6:7.1f} / {cost['receiver CPU'] * 1e6:7.1f}"
            )
    return results
