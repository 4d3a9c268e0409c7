"""Running a rawlink() callback: once, and never letting it take its runner down.

Both backends' hubs (the shared-memory hub thread, the Redis listener
thread) run callbacks through :func:`run`: an exception a callback raises
is reported through :func:`threading.excepthook`, as an uncaught
exception of a thread would be, and the hub carries on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run(callback: Callable[[Any], object], handle: Any) -> None:
    """Call ``callback(handle)``; report what it raises instead of raising it."""
    try:
        callback(handle)
    except BaseException as exc:
        threading.excepthook(
            threading.ExceptHookArgs(
                (type(exc), exc, exc.__traceback__, threading.current_thread())
            )
        )
