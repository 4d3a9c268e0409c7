"""The exceptions every backend raises: a process that ended, a server out of reach."""

from __future__ import annotations


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
    if it was killed or crashed.
    """

    def __init__(self, pid: int, exited: bool) -> None:
        how = (
            "exited without setting it"
            if exited
            else "died without setting it (killed by a signal such as SIGKILL or the "
            "OOM killer, or crashed)"
        )
        super().__init__(
            f"the process that claimed this AsyncResult (pid {pid} in its own PID namespace) {how}"
        )
        self.pid = pid
        self.exited = exited

    def __reduce__(self) -> tuple[type[ProcessDied], tuple[int, bool]]:
        return type(self), (self.pid, self.exited)


class BackendUnavailable(ConnectionError):
    """The server holding a backend's objects cannot be reached (after retrying)."""
