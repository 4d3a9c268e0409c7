"""asyncio waits under uvloop's loop work as under asyncio's (run when uvloop is installed)."""

from __future__ import annotations

import asyncio

import pytest

import mpevent

uvloop = pytest.importorskip("uvloop")
# uvloop keeps a pipe open for the life of the process from its first loop
# on: open it before the module's leak check counts descriptors.
uvloop.run(asyncio.sleep(0))


def test_a_set_wakes_a_wait_async_on_uvloop() -> None:
    event = mpevent.Event()

    async def main() -> tuple[bool, bool]:
        task = asyncio.create_task(event.wait_async(30))
        while event._record.info()["waiters"] < 1:
            await asyncio.sleep(0.001)
        event.set()
        return await task, await mpevent.Event().wait_async(0.01)

    assert uvloop.run(main()) == (True, False)
    assert event._record.info()["waiters"] == 0
