"""Where a stored value lives: in its record, in the arena's heap, or in a segment.

A value (pickled into a frame by ``_serial``) is placed by size:

* a plain pickle of up to 16 bytes: inline, in the record's payload;
* a plain pickle of up to 64 KiB: a block of the arena's heap (no system
  call, no new file), copied in and published by one C call;
* larger, or with out-of-band buffers: a frame in a segment of its own,
  ``<arena name>.v<id>``, mode 0600, written once and mapped once by each
  reader.  When its value is gone the segment is kept as a spare for the
  next large value (a few, up to 256 MiB per arena), since allocating and
  zeroing fresh pages costs more than the copy itself.

The frame is complete before ``publish`` raises the flag, so a reader never
sees half a value.  Replacing a value (AsyncResult.set twice, as gevent
allows) frees the old heap block under the record lock and unlinks the old
segment; a reader that had not opened it yet rereads the descriptor.  When
the record is freed, its segments are unlinked (heap blocks are freed in C).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import secrets
import struct
from collections.abc import Sequence
from typing import Final

from . import _native, _segment, _serial
from ._arena import VALUE_MARK, Arena

DESCRIPTOR: Final = struct.Struct("=B3xI16s")  # tag, frame length, inline frame or location
LOCATION: Final = struct.Struct("=Q8x")


def segment_name(arena: Arena, ident: int) -> str:
    return f"{arena.name}{VALUE_MARK}{ident:x}"


def store(
    arena: Arena, index: int, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> None:
    """Write a pickled value into slot *which* of a record and raise its flag."""
    native = arena.native
    if not buffers:
        old = native.store(index, which, inband)  # inline or heap, in one call
        if old is not None:
            discard(arena, old)
            return
    size = _serial.frame_size(inband, buffers)
    ident = _write_to_spare(arena, size, inband, buffers)
    if ident is None:
        ident = secrets.randbits(63) | 1  # never 0, which means "no spare"
        _write_segment(segment_name(arena, ident), size, inband, buffers, new=True)
    old = native.publish_segment(index, which, ident, size)
    discard(arena, old)


def load(arena: Arena, index: int, which: int) -> tuple[bool, object]:
    """(True, the unpickled object in slot *which*), or (False, None) if empty.

    Raises FileNotFoundError if the value's segment was removed from
    outside (by hand, or by ``clean`` of an arena believed dead).
    """
    missing = None
    while True:
        got = arena.native.read(index, which)
        if got is None:
            return False, None
        _tag, data = got
        if isinstance(data, bytes):  # inline or heap: a plain pickle, copied out
            return True, pickle.loads(data)
        name = segment_name(arena, data)
        try:
            return True, _read_segment(name)
        except FileNotFoundError:
            if name == missing:
                raise FileNotFoundError(
                    f"the shared memory of this value ({name}) was removed from outside"
                ) from None
            missing = name  # replaced meanwhile: read the new descriptor


def discard(arena: Arena, descriptor: bytes, recycle: bool = False) -> None:
    """Drop the segment a replaced or freed descriptor points to, if any.

    Only a freed record's segments are *recycled*: nobody can be reading
    them.  A replaced value may still be read by a process that fetched its
    descriptor just before: its segment is unlinked, which leaves the pages
    to mappings that exist, and never rewritten.
    """
    tag, _, where = DESCRIPTOR.unpack(descriptor)
    if tag != _native.VALUE_SEGMENT:
        return
    ident = LOCATION.unpack(where)[0]
    name = segment_name(arena, ident)
    if recycle:
        try:
            size = os.stat(_segment.path_of(name)).st_size
        except FileNotFoundError:
            return
        if arena.native.spare_put(ident, size):
            return
    _segment.unlink(name)


def discard_payload(arena: Arena, payload: bytes) -> None:
    """Release what a freed record's two value slots point to."""
    for start in range(0, len(payload), DESCRIPTOR.size):
        discard(arena, payload[start : start + DESCRIPTOR.size], recycle=True)


def _write_to_spare(
    arena: Arena, size: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> int | None:
    """Write into a spare segment of *arena*; its id, or None if there is none."""
    while (spare := arena.native.spare_take(size, 2 * size)) is not None:
        ident, _ = spare
        try:
            _write_segment(segment_name(arena, ident), size, inband, buffers, new=False)
        except FileNotFoundError:
            continue  # removed from outside: try the next spare
        return ident
    return None


def _write_segment(
    name: str, size: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer], new: bool
) -> None:
    if new:
        fd = _segment.create(name, size)
    else:
        fd, size = _segment.open_existing(name)
    try:
        # MAP_POPULATE: fault the pages in one go rather than one by one.
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
        with mmap.mmap(fd, size, flags=flags) as mapping, memoryview(mapping) as view:
            _serial.write_frame(view, inband, buffers)
    except BaseException:
        _segment.unlink(name)
        raise
    finally:
        os.close(fd)


def _read_segment(name: str) -> object:
    fd, size = _segment.open_existing(name)
    try:
        mapping = mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
        )
    finally:
        os.close(fd)
    with memoryview(mapping) as view:
        value = _serial.read_frame(view)
    # A zero-copy type (NumPy) may still use the mapping: it is then freed with it.
    with contextlib.suppress(BufferError):
        mapping.close()
    return value
