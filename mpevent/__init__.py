"""gevent.event's Event and AsyncResult, shared across processes.

The public classes and the backend-neutral machinery live here; the
objects themselves live in a backend below: ``shm`` (this machine's
shared memory, the default) or ``redis`` (a Redis server or cluster,
through :func:`connect`).  This module wires the default.
"""

from . import _base, shm
from ._connect import connect
from ._errors import BackendUnavailable, ClaimLost, ProcessDied
from ._select import iwait, wait
from ._serial import RemoteException, RemoteTraceback
from ._version import __version__
from .asyncresult import AsyncResult, Timeout
from .event import Event

_base.install_default(shm.LocalBackend())

__all__ = [
    "AsyncResult",
    "BackendUnavailable",
    "ClaimLost",
    "Event",
    "ProcessDied",
    "RemoteException",
    "RemoteTraceback",
    "Timeout",
    "__version__",
    "connect",
    "iwait",
    "wait",
]
