"""The shared-memory backend: objects of this machine, in an arena of /dev/shm.

Layers, top down: ``_backend`` (the backend object), ``_objects`` (the
public classes on a record, with the hot path in C), ``_names`` (names for
unrelated processes), ``_record`` (one object: references, values,
waiting); ``_hub`` (the thread that runs rawlink() callbacks) and
``_loop`` (waits in an asyncio loop or a gevent hub), each the driver of
a parking lot; ``_parking`` (waiting, in one place: the parking lot, a
waiter slot and the links it queued, and a blocking thread's slots and
waits) and ``_storage`` (where values live); ``_arena`` (mapping segments),
``_clean`` (removing abandoned ones), ``_attach`` (who is attached and
alive), ``_spill`` (values shared memory cannot hold, in files on disk),
``_segment`` (files in /dev/shm), ``_linux`` (the Linux-specific calls);
and under them all ``_native``, the C extension (``src/native/``).
"""

from .. import _serial
from ._backend import LocalBackend
from ._native import copy_bytes
from ._objects import AsyncResult, Event

# Large bytes values come out of a shared block in one copy into pages
# faulted in at once (copy_bytes in heap.c): 32 MiB in 5 ms dropped and 12 ms
# kept, against bytes()'s 16-19 ms, measured here.
_serial.use_bytes_copier(copy_bytes)

__all__ = ["AsyncResult", "Event", "LocalBackend"]
