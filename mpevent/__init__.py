"""gevent.event's Event and AsyncResult, shared across processes.

The public classes and the backend-neutral machinery live here; the
objects themselves live in a backend below: ``shm`` (this machine's
shared memory, the default) or ``redis`` (a Redis server or cluster,
through :func:`connect`).  This module wires the default.

Modules, top down (each imports only those below it; import-linter keeps
it so): ``__main__`` (the command line) and ``tools`` (doctor,
benchmarks, demo); ``_connect`` (a backend by URL); the backends ``shm``
and ``redis``; ``event`` and ``asyncresult`` (the public classes);
``_base`` (what every backend object shares, the default backend);
``_select`` (``wait()``, ``iwait()``); ``_linkable`` (what Event and
AsyncResult share, the one wait path); ``_cooperative`` (gevent),
``_serial`` (values and exceptions to bytes), ``_callbacks`` (running a
rawlink() callback), ``_checks`` (validating input), ``_errors`` (the
exceptions), ``_lifecycle`` (fork and exit hooks, in order), ``_urls``
(URLs without secrets), ``_version``; at the bottom ``_interface``, the
two Protocols every backend implements.
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
