"""Living with gevent: waiting without freezing the other greenlets.

A greenlet that parks its OS thread in the kernel stops every greenlet of
that thread.  So when a gevent hub runs in the calling thread, waiting is
done the hub's way, by each backend's ``wait_in_greenlet``: on shared
memory the hub's loop reads the wakeups itself, as an asyncio loop does (a
datagram socket, an eventfd: ``mpevent.shm._loop``); on Redis,
:func:`wait_any` here: a rawlink() callback on the listener thread sends a
gevent async watcher (thread-safe), which wakes the waiting greenlet on its
own loop.  Only that greenlet blocks.

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


def wait_any(linkables: Sequence[Linkable], seconds: float | None) -> list[int]:
    """gevent-friendly wait for any of *linkables*: positions seen set, in order.

    A backend's ``wait_in_greenlet`` through rawlink() (Redis's): every
    blocking call of the public API (one object for ``wait()``/``get()``,
    several for ``mpevent.wait()`` and ``iwait()``) comes here inside a
    greenlet: one rawlink() per object, one async watcher, and only the
    calling greenlet sleeps.  An object set and cleared again while we wait
    counts (its callback ran), as it does for a blocking wait.
    """
    import gevent.event
    from gevent import get_hub

    ready = [i for i, linkable in enumerate(linkables) if linkable.ready()]
    if ready or (seconds is not None and seconds <= 0):
        return ready
    woken = gevent.event.Event()
    watcher: Any = get_hub().loop.async_()
    watcher.start(woken.set)
    fired: list[int] = []  # appended on mpevent's hub thread, read here after waking
    callbacks = []
    for position, linkable in enumerate(linkables):

        def on_set(_: object, position: int = position) -> None:
            fired.append(position)
            watcher.send()  # the one gevent call that is safe from another thread

        linkable.rawlink(on_set)
        callbacks.append(on_set)
    try:
        woken.wait(seconds)
        seen = list(dict.fromkeys(fired))
        late = [i for i, obj in enumerate(linkables) if i not in seen and obj.ready()]
        return seen + late
    finally:
        for linkable, on_set in zip(linkables, callbacks, strict=True):
            linkable.unlink(on_set)
        watcher.stop()
        watcher.close()


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
