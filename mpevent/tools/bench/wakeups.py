"""Wakeup latency of each way of waiting (wait, rawlink, asyncio, gevent) beside the stdlib."""

from __future__ import annotations

import time

from ...event import Event
from ...shm import _native
from ._common import (
    CTX,
    Channel,
    loaded_machine,
    medians,
)
from .values import handoffs

# --- wakeup paths ------------------------------------------------------------


def _event_wait_channel(count: int) -> Channel:
    events = [Event() for _ in range(count)]
    return (lambda i: events[i].wait()), (lambda i, _value: events[i].set())


def _no_spin_channel(count: int) -> Channel:
    """Event.wait() with the receiver's spin limit at 0 (MPEVENT_SPIN=0) for each wait."""
    events = [Event() for _ in range(count)]

    def receive(i: int) -> float:
        before = _native.spin_limit()
        _native.set_spin_limit(0)
        try:
            events[i].wait()
            return time.perf_counter()  # the restore below is not the wakeup's
        finally:
            _native.set_spin_limit(before)

    return receive, (lambda i, _value: events[i].set())


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


def _eventfd_loop_channel(count: int) -> Channel:
    """The floor of an asyncio wakeup from another process: an eventfd written
    by the sender, read by the loop through add_reader(), resuming a task."""
    import asyncio
    import os

    fd = os.eventfd(0)  # inherited by the forked receiver
    loop: list[asyncio.AbstractEventLoop] = []

    def receive(i: int) -> float:
        async def resumed() -> float:
            running = asyncio.get_running_loop()
            readable: asyncio.Future[None] = running.create_future()

            def ready() -> None:
                os.eventfd_read(fd)
                if not readable.done():
                    readable.set_result(None)

            running.add_reader(fd, ready)
            try:
                await readable
            finally:
                running.remove_reader(fd)
            return time.perf_counter()

        if not loop:
            loop.append(asyncio.new_event_loop())
        return loop[0].run_until_complete(resumed())

    return receive, (lambda i, _value: os.eventfd_write(fd, 1))


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


def wakeup_latency(count: int, trials: int = 3, loaded: bool = False) -> dict[str, float]:
    """Median seconds from set() in one process to each kind of waiter in
    another; *loaded*: with a nice-19 spinner per CPU meanwhile."""
    with loaded_machine(loaded):
        return _wakeup_latency(count, trials)


def _wakeup_latency(count: int, trials: int) -> dict[str, float]:
    import importlib.util

    peers = {
        "mpevent Event.wait()": _event_wait_channel,
        "mpevent Event.wait(), no spin": _no_spin_channel,
        "mpevent rawlink callback": _callback_channel,
        "mpevent asyncio wait_async()": _asyncio_channel,
        "floor: eventfd to an asyncio loop": _eventfd_loop_channel,
        "multiprocessing.Event.wait()": _mp_event_channel,
    }
    table = medians([handoffs(peers, b"", count) for _ in range(trials)])
    if importlib.util.find_spec("gevent") is not None:
        # A receiver of its own: once a gevent hub runs in a thread, every
        # wait of that thread is cooperative, and the other peers would be too.
        gevent = {"mpevent in a gevent greenlet": _gevent_channel}
        table.update(medians([handoffs(gevent, b"", count) for _ in range(trials)]))
    return table


def report_wakeup_latency(count: int, trials: int = 3) -> dict[str, dict[str, float]]:
    """Print and return wakeup_latency() "idle", then "loaded"."""
    figures: dict[str, dict[str, float]] = {}
    for loaded in (False, True):
        table = wakeup_latency(count, trials, loaded)
        base = table["mpevent Event.wait()"]
        floor = table["floor: eventfd to an asyncio loop"]
        regime = "loaded (a nice-19 spinner per CPU)" if loaded else "idle"
        print(
            f"wakeup latency from set() in one process to a waiter in another, {regime}, "
            "median (fork)"
        )
        for name, seconds in table.items():
            print(f"  {name:34s} {seconds * 1e6:8.1f} us   {seconds / base:5.2f}x Event.wait()")
        print(
            f"  asyncio is {table['mpevent asyncio wait_async()'] / floor:.2f}x its floor; "
            f"rawlink {table['mpevent rawlink callback'] / base:.2f}x Event.wait()"
        )
        figures["loaded" if loaded else "idle"] = table
    return figures
