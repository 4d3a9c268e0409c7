"""Where a stored value lives: in its record, or in the arena's value heap.

A value (pickled by ``_serial``) is placed by its pickled form:

* a plain pickle of up to 16 bytes: inline, in the record's payload;
* a plain pickle of up to 64 KiB: a small heap block, copied in and
  published by one C call;
* anything larger, or with out-of-band buffers (bytes, NumPy arrays...):
  a *frame* written into a large heap block, each buffer copied once,
  straight from the value.  Readers see the block through a
  :class:`~mpevent.shm._native.BlockView`: NumPy arrays unpickle as read-only
  arrays on the shared pages (no copy), everything else is copied out once;
* a value shared memory cannot hold (``/dev/shm`` full, the cap reached):
  the same frame in a file on disk (``_spill``), mapped by readers alike.

The heap (``src/native/heap.c``) is part of the arena's one mapping: no
file is created, mapped or unlinked per value, and a freed block is reused
with its pages still in memory.  The frame is complete before
``publish_block`` raises the flag, so a reader never sees half a value; a
writer that dies before publishing leaves an unpublished block, which the
process that finds it dead gives back.  A block lives while its value slot
or any reader's view holds it, so a view outlives a new ``set()``, the
record's release and its setter's death.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Final

from .. import _serial
from . import _spill
from ._arena import Arena
from ._native import BLOCK_HEADER

VALUE_LARGE: Final = 3  # the tags read() gives with a frame (see arena.h)
VALUE_SPILLED: Final = 4


def store(
    arena: Arena, index: int, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> None:
    """Write a pickled value into slot *which* of a record and raise its flag.

    Shared memory first; when it or the cap runs out, the value spills to
    disk.  Raises MemoryError (saying what ran out, and how to raise each
    limit) when the disk cannot take it either; the slot then keeps what
    it held.
    """
    native = arena.native
    try:
        try:
            if not buffers and native.store(index, which, inband):  # inline or small: one call
                return
            size = _serial.frame_size(inband, buffers)
            block = native.block_alloc(size, arena.entry)
        except MemoryError:
            # Processes that died attached may still hold memory: give it
            # back (all of them, asked of the kernel) and try once more.
            if not arena.reclaim_dead_processes():
                raise
            if not buffers and native.store(index, which, inband):
                return
            size = _serial.frame_size(inband, buffers)
            block = native.block_alloc(size, arena.entry)
    except MemoryError as full:
        size = _serial.frame_size(inband, buffers)
        _spill.store(native, index, which, inband, buffers, size, full)
        return
    try:
        start = block + BLOCK_HEADER
        with arena.view[start : start + size] as target:
            _serial.write_frame(target, inband, buffers)
    except BaseException:
        native.block_abandon(block)
        raise
    native.publish_block(index, which, block)


def load(arena: Arena, index: int, which: int, copy: bool = False) -> tuple[bool, object]:
    """(True, the unpickled object in slot *which*), or (False, None) if empty.

    Buffers of a large value are used in place (read-only, zero-copy) unless
    *copy* asks for private writable copies.
    """
    try:
        got = arena.native.read(index, which, arena.entry)
    except OSError as exc:  # only a spilled value's file can fail to open
        raise type(exc)(
            exc.errno,
            f"this result's value was spilled to {exc.filename}, which this process cannot "
            f"open ({exc.strerror}): every process that reads it must see the same spill "
            "directory (set MPEVENT_SPILL_DIR, in the process that creates the arena, to a "
            "directory they share)",
        ) from exc
    if got is None:
        return False, None
    tag, data = got
    if tag == VALUE_LARGE:
        return True, _serial.read_frame(memoryview(data), copy)
    if tag == VALUE_SPILLED:  # a descriptor of its file, opened under the record lock
        return True, _serial.read_frame(_spill.open_view(arena.native, *data), copy)
    return True, pickle.loads(data)  # inline or small: a plain pickle, copied out
