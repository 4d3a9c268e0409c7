"""The Redis backend: the same Event and AsyncResult across machines.

``mpevent.connect("redis://host:6379/0")`` returns a :class:`RedisBackend`;
its ``Event`` and ``AsyncResult`` are mpevent's own classes with their
state on a Redis server or cluster.  Layers, top down: ``_backend`` (the
backend object), ``_objects`` (the public classes), ``_registry`` (one
backend per server, for unpickled handles), ``_record`` (one object: each
operation one script, and waiting); ``_waiting`` (a blocking wait: what
it heard, what it must read again) and ``_leases`` (a claimer's leases
and the thread that renews them); ``_inbox`` (a blocking thread's own
pub/sub connection, read by the waiting thread itself) and ``_values``
(signed frames, and the sizes that decide how they travel); ``_listener``
(a pub/sub thread per node that runs rawlink() callbacks, and through
them the asyncio and gevent waits) and ``_scripts`` (the server side, in
Lua); ``_pubsub`` (one pub/sub connection and what its messages mean) and
``_connection`` (URL, credentials, retries).
"""

from .._errors import BackendUnavailable
from ._backend import RedisBackend
from ._objects import RedisAsyncResult, RedisEvent

__all__ = ["BackendUnavailable", "RedisAsyncResult", "RedisBackend", "RedisEvent"]
