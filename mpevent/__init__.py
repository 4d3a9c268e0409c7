"""gevent.event's Event and AsyncResult, shared across processes.

Objects live in shared memory (see ``_arena``); waiting threads of any
process park on them (``_parking``) and are woken by whichever process sets
them.
"""

from ._backend import BackendUnavailable
from ._connect import connect
from ._select import iwait, wait
from ._serial import RemoteException, RemoteTraceback
from ._version import __version__
from .asyncresult import AsyncResult, Timeout
from .event import Event

__all__ = [
    "AsyncResult",
    "BackendUnavailable",
    "Event",
    "RemoteException",
    "RemoteTraceback",
    "Timeout",
    "__version__",
    "connect",
    "iwait",
    "wait",
]
