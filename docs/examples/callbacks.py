"""React to another process's set() with a callback, or in an asyncio task."""

import asyncio
import multiprocessing
import threading

import mpevent


def finish(done: mpevent.Event) -> None:
    done.set()


async def main(done: mpevent.Event) -> bool:
    return await done.wait_async(timeout=30)  # the loop keeps running meanwhile


if __name__ == "__main__":
    done = mpevent.Event()
    called = threading.Event()
    done.rawlink(lambda event: called.set())  # runs here, on mpevent's hub thread
    process = multiprocessing.get_context("spawn").Process(target=finish, args=(done,))
    process.start()
    print("asyncio:", asyncio.run(main(done)))
    print("callback:", called.wait(30))
    process.join(30)
