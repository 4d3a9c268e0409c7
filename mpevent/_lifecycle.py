"""Process lifecycle: the one module that registers fork and exit hooks, in a written order.

Several parts of mpevent keep process-local state that a fork or an exit
must fix up: waiter-slot leases, hubs, Redis listeners, attach entries,
held references.  Each part registers its hooks here by *name*; this
module registers one hook of each kind with the interpreter and calls the
parts in the order below, whatever order they were imported in.

Fork, before (parent, before ``fork()``):
  1. ``loops``    -- retire the idle notifier threads of this thread's gevent
                     hub (fewer threads to warn about at the fork);
  2. ``records``  -- hold the reference table still and pause the collector,
                     so no reference is dropped between counting the child's
                     references and the fork;
  3. ``arenas``   -- give the child an attach entry locked by its own
                     descriptor, with the parent's references shared into it.
Fork, after in the parent: the same parts in the reverse order.
Fork, after in the child:
  1. ``parking``  -- the parent's waiter slots are the parent's: new leases;
  2. ``hubs``     -- the parent's hub threads do not exist here;
  3. ``loops``    -- nor its event loops' notifier threads;
  4. ``redis``    -- nor its listener threads and connections;
  5. ``leases``   -- nor its claims on Redis and their renewing thread;
  6. ``arenas``   -- take over the entry prepared for us, drop the parent's
                     descriptor (it must not keep a dead parent alive);
  7. ``records``  -- the reference table and collector back to normal.
Exit (``atexit``, and ``multiprocessing``'s exit finalizers for its
children, which end with ``os._exit()``):
  1. ``claims``   -- fail the results this process promised and did not set;
  2. ``leases``   -- the same for its claims on Redis servers;
  3. ``records``  -- give back every reference;
  4. ``arenas``   -- leave every arena (the last leaver unlinks it).

The C extension keeps one hook of its own (``pthread_atfork`` in
``src/native/wait.c``, for the process-local watch list and its lock):
it resets C statics, touches no Python object, and runs before any of
these.  It must be C's: the watch lock has to be held across the fork
itself, which no Python hook can do without racing the C code that takes it.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
from collections.abc import Callable
from typing import Final

Hook = Callable[[], None]

BEFORE_FORK: Final = ("loops", "records", "arenas")
AFTER_FORK_IN_PARENT: Final = ("arenas", "records")
AFTER_FORK_IN_CHILD: Final = (
    "parking",
    "hubs",
    "loops",
    "redis",
    "leases",
    "arenas",
    "records",
)
AT_EXIT: Final = ("claims", "leases", "records", "arenas")

_hooks: dict[tuple[str, str], Hook] = {}
_exit_pid = 0  # the process whose exit hooks are installed
_exited_pid = 0  # the process whose exit hooks have run (they run once)


def on_fork(
    part: str,
    *,
    before: Hook | None = None,
    after_in_parent: Hook | None = None,
    after_in_child: Hook | None = None,
) -> None:
    """Register *part*'s fork hooks; *part* must be named in this module's order."""
    for phase, order, hook in (
        ("before", BEFORE_FORK, before),
        ("parent", AFTER_FORK_IN_PARENT, after_in_parent),
        ("child", AFTER_FORK_IN_CHILD, after_in_child),
    ):
        if hook is None:
            continue
        if part not in order:
            raise ValueError(f"{part!r} has no place in the order of fork hooks ({phase})")
        _hooks[phase, part] = hook


def at_exit(part: str, hook: Hook) -> None:
    """Register *part*'s exit hook (run once, in AT_EXIT's order, by this process)."""
    if part not in AT_EXIT:
        raise ValueError(f"{part!r} has no place in the order of exit hooks")
    _hooks["exit", part] = hook


def _run(phase: str, order: tuple[str, ...]) -> None:
    for part in order:
        hook = _hooks.get((phase, part))
        if hook is not None:
            hook()


def _run_exit() -> None:
    global _exited_pid
    if _exit_pid != os.getpid() or _exited_pid == os.getpid():
        return  # inherited by a child that never used mpevent, or run already
    _exited_pid = os.getpid()
    try:
        for part in AT_EXIT[:-1]:
            hook = _hooks.get(("exit", part))
            if hook is not None:
                hook()
    finally:  # leave in any case: a joined entry must not outlive the process
        hook = _hooks.get(("exit", AT_EXIT[-1]))
        if hook is not None:
            hook()


def need_exit_hooks() -> None:
    """Make sure this process runs the exit hooks (call once it has something to undo)."""
    global _exit_pid
    if _exit_pid == os.getpid():
        return
    _exit_pid = os.getpid()
    atexit.register(_run_exit)
    # multiprocessing children end with os._exit(), which skips atexit but
    # runs these finalizers.
    multiprocessing.util.Finalize(None, _run_exit, exitpriority=-100)


def _after_fork_in_child() -> None:
    global _exit_pid
    installed = _exit_pid != 0
    _exit_pid = 0
    _run("child", AFTER_FORK_IN_CHILD)
    if installed:  # the child holds what the parent held: it has things to undo
        need_exit_hooks()


class _AfterMultiprocessingFork:
    """multiprocessing clears its finalizers in a new child; put ours back."""

    def __call__(self) -> None:
        global _exit_pid
        if _exit_pid:
            _exit_pid = 0
            need_exit_hooks()


_after_mp_fork = _AfterMultiprocessingFork()
multiprocessing.util.register_after_fork(_after_mp_fork, lambda hook: hook())
os.register_at_fork(
    before=lambda: _run("before", BEFORE_FORK),
    after_in_parent=lambda: _run("parent", AFTER_FORK_IN_PARENT),
    after_in_child=_after_fork_in_child,
)
