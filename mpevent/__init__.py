"""gevent.event's Event and AsyncResult, shared across processes.

Objects live in shared memory (see ``_arena``); waiting threads of any
process park on them (``_parking``) and are woken by whichever process sets
them.
"""

from ._version import __version__
from .event import Event

__all__ = ["Event", "__version__"]
