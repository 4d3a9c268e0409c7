"""Living with gevent: waiting without freezing the other greenlets.

A greenlet that parks its OS thread in the kernel stops every greenlet of
that thread.  So when a gevent hub runs in the calling thread, waiting is
done the hub's way, by :func:`wait_linked`, with each backend saying how
a set reaches the greenlet: on shared memory the hub's loop reads the
wakeups itself, as an asyncio loop does (a datagram socket, an eventfd:
``mpevent.shm._loop``); on Redis a rawlink() callback on the listener
thread sends a gevent async watcher (thread-safe), which wakes the waiting
greenlet on its own loop.  Only that greenlet blocks.

And mpevent's own hub must stay a real OS thread with a real lock even
when gevent has monkey-patched ``threading`` into greenlets.
"""

from __future__ import annotations

import _thread
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._linkable import Linkable


def in_greenlet() -> bool:
    """True if a gevent hub runs in this thread and we are not that hub."""
    if "gevent" not in sys.modules:  # no gevent program: skip the import machinery
        return False
    try:
        from gevent import getcurrent
        from gevent._hub_local import get_hub_if_exists  # gevent >= 20
    except ImportError:  # an unknown gevent: block the thread as usual
        return False
    hub = get_hub_if_exists()
    return hub is not None and getcurrent() is not hub


# How a backend links a wakeup to one object for wait_linked(): given the
# object's position, the object, and what to call when it is set, it links
# and returns how to unlink, or None if the object is set already.
Link = Callable[[int, "Linkable", Callable[[], None]], "Callable[[], None] | None"]


def wait_linked(
    linkables: Sequence[Linkable], seconds: float | None, link: Link, *, from_other_thread: bool
) -> list[int]:
    """Block only the calling greenlet until one of *linkables* is set.

    The one gevent wait of every backend (``wait_in_greenlet``): each
    blocking call of the public API (one object for ``wait()``/``get()``,
    several for ``mpevent.wait()`` and ``iwait()``) comes here inside a
    greenlet.  The backend's *link* says how an object's set reaches us:
    on the gevent hub's own loop (shared memory: ``_loop``), or, with
    *from_other_thread*, from another thread (Redis's rawlink() callbacks
    on its listener thread), through a gevent async watcher, the one gevent
    call that is safe from another thread.  Returns the positions seen set,
    in order, [] when *seconds* passed.  An object set and cleared again
    while we wait counts, as it does for a blocking wait.
    """
    import gevent.event
    from gevent import get_hub

    ready = [i for i, linkable in enumerate(linkables) if linkable.ready()]
    if ready or (seconds is not None and seconds <= 0):
        return ready
    woken = gevent.event.Event()
    watcher: Any = None
    wake: Callable[[], None] = woken.set
    if from_other_thread:
        watcher = get_hub().loop.async_()
        watcher.start(woken.set)
        wake = watcher.send
    fired: list[int] = []  # appended where the set arrives, read here after waking
    unlinks: list[Callable[[], None]] = []
    try:
        for position, linkable in enumerate(linkables):

            def on_set(position: int = position) -> None:
                fired.append(position)
                wake()

            unlink = link(position, linkable, on_set)
            if unlink is None:  # set already: no need to sleep
                fired.append(position)
                break
            unlinks.append(unlink)
        if not fired:
            woken.wait(seconds)
        seen = list(dict.fromkeys(fired))
        late = [i for i, obj in enumerate(linkables) if i not in seen and obj.ready()]
        return seen + late
    finally:
        for unlink in unlinks:
            unlink()
        if watcher is not None:
            watcher.stop()
            watcher.close()


def rawlinked(_: int, linkable: Linkable, on_set: Callable[[], None]) -> Callable[[], None]:
    """A :data:`Link` through rawlink() (Redis: the callback runs on the listener thread)."""

    def callback(_: object) -> None:
        on_set()

    linkable.rawlink(callback)
    return lambda: linkable.unlink(callback)


def _threading_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def start_os_thread(run: Callable[[], None], name: str) -> None:
    """Start *run* on a daemon OS thread, even under monkey-patching."""
    if _threading_patched():
        from gevent import monkey

        monkey.get_original("_thread", "start_new_thread")(run, ())
    else:
        threading.Thread(target=run, name=name, daemon=True).start()


def os_lock() -> Any:
    """A lock of the OS threads, even under monkey-patching."""
    if _threading_patched():
        from gevent import monkey

        return monkey.get_original("_thread", "allocate_lock")()
    return _thread.allocate_lock()
