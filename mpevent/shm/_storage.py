"""Where a stored value lives: in its record, or in the arena's value heap.

A value (pickled by ``_serial``) is placed by C, in one call, by its
pickled form (the rule is ``store`` in ``src/native/records.c``):

* a plain pickle of up to 16 bytes: inline, in the record's payload;
* a plain pickle of up to 64 KiB: a small heap block;
* a larger plain pickle: a large heap block, copied out by readers;
* a pickle with out-of-band buffers (bytes, NumPy arrays...): a *frame*
  (``_serial.frame_parts``) in a large heap block, each buffer copied once,
  straight from the value.  Readers see the block through a
  :class:`~mpevent.shm._native.BlockView`: NumPy arrays unpickle as read-only
  arrays on the shared pages (no copy), everything else is copied out once;
* a value shared memory cannot hold (``/dev/shm`` full, the cap reached):
  the frame in a file on disk (``_spill``), mapped by readers alike.

A result whose claimer ended unset holds a failure C wrote in its
exception slot; it reads as a :class:`~mpevent.ProcessDied`.

The heap (``src/native/heap.c``) is part of the arena's one mapping: no
file is created, mapped or unlinked per value, and a freed block is reused
with its pages still in memory.  A value is complete before ``store``
raises the flag, so a reader never sees half of one; a writer that dies
before publishing leaves an unpublished block, which the process that
finds it dead gives back.  A block lives while its value slot or any
reader's view holds it, so a view outlives a new ``set()``, the record's
release and its setter's death.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from .. import _serial
from .._errors import CLAIMER_TRACEBACK, ProcessDied
from . import _native, _spill
from ._arena import Arena


def store(
    arena: Arena, index: int, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> None:
    """Write a pickled value into slot *which* of a record and raise its flag.

    One C call places, copies and publishes it (``store`` in
    ``src/native/records.c``): a plain pickle as itself, a pickle with
    out-of-band buffers as a frame.  When shared memory or the cap runs
    out, the processes that died attached are reclaimed and it is tried
    once more; then the value spills to disk.  Raises MemoryError (saying
    what ran out, and how to raise each limit) when the disk cannot take it
    either; the slot then keeps what it held.
    """
    native = arena.native
    parts = tuple(_serial.frame_parts(inband, buffers)) if buffers else (inband,)
    try:
        try:
            native.store(index, which, parts, arena.entry)
        except MemoryError:
            # Processes that died attached may still hold memory: give it
            # back (all of them, asked of the kernel) and try once more.
            if not arena.reclaim_dead_processes():
                raise
            native.store(index, which, parts, arena.entry)
    except MemoryError as full:
        size = _serial.frame_size(inband, buffers)
        _spill.store(native, index, which, inband, buffers, size, full)


def load(
    arena: Arena, index: int, which: int, known: int, copy: bool = False
) -> tuple[int, int, object]:
    """(generation, slot, object) of slot *which* or EITHER; see RecordBackend.load.

    One C call reads the state and the stored form under the record's lock
    (``load`` in ``src/native/records.c``); only unpickling is left here.
    Buffers of a frame are used in place (read-only, zero-copy) unless
    *copy* asks for private writable copies.
    """
    try:
        generation, slot, tag, data = arena.native.load(index, which, known, arena.entry)
    except OSError as exc:  # only a spilled value's file can fail to open
        raise type(exc)(
            exc.errno,
            f"this result's value was spilled to {exc.filename}, which this process cannot "
            f"open ({exc.strerror}): every process that reads it must see the same spill "
            "directory (set MPEVENT_SPILL_DIR, in the process that creates the arena, to a "
            "directory they share)",
        ) from exc
    if data is None:
        return generation, slot, None
    return generation, slot, _decode(arena, tag, data, copy)


def _decode(arena: Arena, tag: int, data: Any, copy: bool) -> object:
    if tag == _native.VALUE_LARGE:  # a frame, in a pinned block (or copied out)
        return _serial.read_frame(memoryview(data), copy)
    if tag == _native.VALUE_PICKLE:  # a plain pickle in a block: copied out at once
        with memoryview(data) as view:
            return pickle.loads(view)
    if tag == _native.VALUE_SPILLED:  # a descriptor of its file, opened under the record lock
        return _serial.read_frame(_spill.open_view(arena.native, *data), copy)
    if tag == _native.VALUE_FAILED:  # written by C when the claimer ended unset
        pid, exited = data
        return ProcessDied(pid, exited), CLAIMER_TRACEBACK
    return pickle.loads(data)  # inline or small: a plain pickle, copied out
