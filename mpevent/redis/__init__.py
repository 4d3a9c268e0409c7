"""The Redis backend: the same Event and AsyncResult across machines.

``mpevent.connect("redis://host:6379/0")`` returns a :class:`RedisBackend`;
its ``Event`` and ``AsyncResult`` are mpevent's own classes with their
state on a Redis server or cluster.  Layers, top down: ``_backend`` (the
backend object), ``_objects`` (the public classes), ``_record`` (one
object: scripts and waiting), ``_listener`` (pub/sub notifications),
``_scripts`` (Lua), ``_connection`` (URL, credentials, retries).
"""

from .._errors import BackendUnavailable
from ._backend import RedisBackend
from ._objects import RedisAsyncResult, RedisEvent

__all__ = ["BackendUnavailable", "RedisAsyncResult", "RedisBackend", "RedisEvent"]
