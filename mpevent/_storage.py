"""Where a stored value lives: in its record, in the arena's heap, or in a segment.

A value (pickled into a frame by ``_serial``) is placed by size:

* up to 16 bytes: inline, in the record's payload;
* up to 64 KiB: a block of the arena's heap (no system call, no new file);
* larger: a segment of its own, ``<arena name>.v<id>``, mode 0600, written
  once and mapped once by each reader.

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
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from . import _native, _segment, _serial
from ._arena import VALUE_MARK, Arena

DESCRIPTOR: Final = struct.Struct("=B3xI16s")  # tag, frame length, inline frame or location
LOCATION: Final = struct.Struct("=Q8x")

T = TypeVar("T")


def segment_name(arena: Arena, ident: int) -> str:
    return f"{arena.name}{VALUE_MARK}{ident:x}"


def store(
    arena: Arena, index: int, which: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> None:
    """Write a pickled value into slot *which* of a record and raise its flag."""
    native = arena.native
    size = _serial.frame_size(inband, buffers)
    if size <= _native.VALUE_INLINE_MAX:
        inline = bytearray(size)
        _serial.write_frame(memoryview(inline), inband, buffers)
        descriptor = DESCRIPTOR.pack(_native.VALUE_INLINE, size, bytes(inline))
    else:
        offset = native.heap_alloc(size)
        if offset is not None:
            with memoryview(native) as whole, whole[offset : offset + size] as block:
                _serial.write_frame(block, inband, buffers)
            descriptor = DESCRIPTOR.pack(_native.VALUE_HEAP, size, LOCATION.pack(offset))
        else:
            ident = secrets.randbits(63)
            _write_segment(segment_name(arena, ident), size, inband, buffers)
            descriptor = DESCRIPTOR.pack(_native.VALUE_SEGMENT, size, LOCATION.pack(ident))
    old = native.publish(index, which, descriptor)
    discard(arena, old)


def load(arena: Arena, index: int, which: int, decode: Callable[[memoryview], T]) -> T | None:
    """Decode the frame in slot *which*, or None if the slot is empty."""
    while True:
        got = arena.native.read(index, which)
        if got is None:
            return None
        _tag, data = got
        if isinstance(data, bytes):  # inline or heap: already copied out
            with memoryview(data) as frame:
                return decode(frame)
        try:
            return _read_segment(segment_name(arena, data), decode)
        except FileNotFoundError:
            continue  # replaced meanwhile: read the new descriptor


def discard(arena: Arena, descriptor: bytes) -> None:
    """Unlink the segment a (replaced or freed) descriptor points to, if any."""
    tag, _, where = DESCRIPTOR.unpack(descriptor)
    if tag == _native.VALUE_SEGMENT:
        _segment.unlink(segment_name(arena, LOCATION.unpack(where)[0]))


def discard_payload(arena: Arena, payload: bytes) -> None:
    """Release what a freed record's two value slots point to."""
    for start in range(0, len(payload), DESCRIPTOR.size):
        discard(arena, payload[start : start + DESCRIPTOR.size])


def _write_segment(
    name: str, size: int, inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> None:
    fd = _segment.create(name, size)
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


def _read_segment(name: str, decode: Callable[[memoryview], T]) -> T:
    fd, size = _segment.open_existing(name)
    try:
        mapping = mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
        )
    finally:
        os.close(fd)
    with memoryview(mapping) as view:
        value = decode(view)
    # A zero-copy type (NumPy) may still use the mapping: it is then freed with it.
    with contextlib.suppress(BufferError):
        mapping.close()
    return value
