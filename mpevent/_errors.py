"""The exceptions every backend raises: a process that ended, a server out of reach."""

from __future__ import annotations

# The traceback a claim's failure carries: no code of the claimer raised it.
CLAIMER_TRACEBACK = "(no traceback: the claimer ended without setting the result)"


class ProcessDied(RuntimeError):
    """The process that promised to set an AsyncResult ended without setting it.

    Raised by ``get()`` (and returned by ``exception``) of a result that a
    process *claimed* (:meth:`mpevent.AsyncResult.claim`) and then did not
    set: it was killed (SIGKILL, the OOM killer), crashed, or exited.  The
    failure is stored in the result, so every reader, now and later, sees
    the same exception.  Catch it as ``mpevent.ProcessDied`` or as
    :class:`RuntimeError`.

    ``pid`` is the claimer's pid in its own PID namespace (another
    container's pid means nothing here); ``exited`` is True if it ran its
    exit handlers (it ended normally without setting the result) and False
    if it was killed or crashed.  ``host`` is the claimer's host name on a
    Redis server (where a claim is a lease the claimer renews, and a lapsed
    lease reads as a death: see :class:`ClaimLost`), None on shared memory.
    """

    def __init__(self, pid: int, exited: bool, host: str | None = None) -> None:
        if exited:
            how = "exited without setting it"
        elif host is None:
            how = (
                "died without setting it (killed by a signal such as SIGKILL or the "
                "OOM killer, or crashed)"
            )
        else:
            how = (
                "stopped renewing its claim's lease without setting it (killed by a signal "
                "such as SIGKILL or the OOM killer, crashed, its host lost, or cut off "
                "from the Redis server for longer than the lease)"
            )
        where = "in its own PID namespace" if host is None else f"on host {host}"
        super().__init__(f"the process that claimed this AsyncResult (pid {pid} {where}) {how}")
        self.pid = pid
        self.exited = exited
        self.host = host

    def __reduce__(self) -> tuple[type[ProcessDied], tuple[int, bool, str | None]]:
        return type(self), (self.pid, self.exited, self.host)


class ClaimLost(RuntimeError):
    """This process's claim on a Redis AsyncResult lapsed while it lived.

    Raised by ``set()`` / ``set_exception()`` of the claimer when its lease
    ran out unrenewed (the process was paused, or could not reach the
    server, for longer than the lease): every reader was then told
    :class:`ProcessDied`, and that failure stays; nothing was stored.
    """


class BackendUnavailable(ConnectionError):
    """The server holding a backend's objects cannot be reached (after retrying)."""
