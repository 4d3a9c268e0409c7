"""Serialization: values and exceptions to bytes and back, pickle protocol 5.

Large ``bytes``, ``bytearray``, ``memoryview`` and ``array.array`` values
(and anything whose ``__reduce_ex__(5)`` offers :class:`pickle.PickleBuffer`,
such as NumPy arrays, also inside containers) travel *out of band*: their
buffers are not copied into the pickle stream but written straight into
shared memory next to it, and rebuilt from there with one copy.

A *frame* is the stored form of one value::

    | FRAME_HEADER: buffer count, in-band length | u64 length per buffer |
    | in-band pickle | each buffer, starting on a 64-byte boundary     |

Exceptions cross with their type and args and the sender's traceback as
text, chained as ``__cause__`` (as :mod:`concurrent.futures` does); one that
cannot be pickled arrives as :class:`RemoteException` carrying its type name,
message and traceback text.
"""

from __future__ import annotations

import array
import pickle
import struct
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, SupportsIndex

FRAME_HEADER: Final = struct.Struct("=II")
BUFFER_LENGTH: Final = struct.Struct("=Q")
IN_BAND_MAX: Final = 8 * 1024  # buffers up to this size are pickled whole, in band
# A top-level bytes-like value up to this size is pickled whole too: in
# shared memory it then fits a small block (a plain pickle up to 64 KiB,
# SMALL_MAX), copied in and out under the record lock, where out of band it
# took a large block, with a header page, a pin and a view for the reader.
# Measured with a receiver parked for milliseconds (benchmarks/parked.py,
# docs/design.md): 16 KiB went from 1.43-1.62x a Pipe to 1.02-1.27x.  NumPy
# arrays keep IN_BAND_MAX: past it they stay zero-copy views.
BYTES_IN_BAND_MAX: Final = 60 * 1024
_BUFFER_TYPES: Final = (bytes, bytearray, memoryview, array.array)
# Types whose pickles have no out-of-band buffers: no second look needed.
_PLAIN_TYPES: Final = frozenset({type(None), bool, int, float, str, tuple, list, dict})
_ALIGN: Final = 64


# How a large bytes value is copied out: bytes() until a backend offers a
# faster copy (the shared-memory one faults the pages in at once, see
# copy_bytes in its heap.c).
_copy_bytes: Callable[[pickle.PickleBuffer], bytes] = bytes


def use_bytes_copier(copier: Callable[[pickle.PickleBuffer], bytes]) -> None:
    """Copy large bytes values out with *copier*, which must equal bytes()."""
    global _copy_bytes
    _copy_bytes = copier


def _bytes_from_buffer(buffer: pickle.PickleBuffer) -> bytes:
    return _copy_bytes(buffer)


def _bytearray_from_buffer(buffer: pickle.PickleBuffer) -> bytearray:
    return bytearray(buffer)


def _memoryview_from_buffer(buffer: pickle.PickleBuffer) -> memoryview:
    return memoryview(bytearray(buffer))


def _array_from_buffer(typecode: str, buffer: pickle.PickleBuffer) -> array.array[Any]:
    rebuilt = array.array(typecode)
    rebuilt.frombytes(buffer)
    return rebuilt


class _OutOfBand:
    """Wraps a top-level bytes-like value so its buffer can leave the stream.

    The pickler never consults reducers for exact ``bytes`` (CPython pickles
    them inline for speed), so the value is wrapped instead; the wrapper
    unpickles as the original type, rebuilt with one copy.
    """

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray | memoryview | array.array[Any]) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        value = self.value
        if isinstance(value, bytes):
            return _bytes_from_buffer, (pickle.PickleBuffer(value),)
        if isinstance(value, bytearray):
            return _bytearray_from_buffer, (pickle.PickleBuffer(value),)
        if isinstance(value, memoryview):
            if value.c_contiguous:
                return _memoryview_from_buffer, (pickle.PickleBuffer(value.cast("B")),)
            return _memoryview_from_buffer, (value.tobytes(),)
        return _array_from_buffer, (value.typecode, pickle.PickleBuffer(value))


def dumps(obj: object) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle *obj*: (in-band stream, out-of-band buffers).

    A value whose buffers total at most IN_BAND_MAX bytes comes back whole in band (no
    buffers).  Larger buffers go out of band when the value itself is a
    bytes-like or array, or offers PickleBuffers (NumPy); bytes nested
    inside containers stay in band.  Raises TypeError naming the type that
    could not be pickled.
    """
    buffers: list[pickle.PickleBuffer] = []
    # An array that says it is small (NumPy's nbytes) is pickled once, in band.
    nbytes = getattr(obj, "nbytes", None) if type(obj) not in _PLAIN_TYPES else 0
    callback = buffers.append if not (type(nbytes) is int and nbytes <= IN_BAND_MAX) else None
    try:
        inband = _dump(obj, callback)
        if buffers and len(inband) + sum(b.raw().nbytes for b in buffers) <= IN_BAND_MAX:
            inband, buffers = _dump(obj, None), []
    except Exception as exc:
        raise TypeError(
            f"cannot share a value of type {type(obj).__qualname__!r} between processes: "
            f"it cannot be pickled ({exc})"
        ) from exc
    return inband, buffers


def _dump(obj: object, buffer_callback: Callable[[pickle.PickleBuffer], None] | None) -> bytes:
    kind = type(obj)
    # Wrap only when it pays (or is needed: memoryview does not pickle).
    if kind is memoryview or (
        kind in _BUFFER_TYPES and memoryview(obj).nbytes > BYTES_IN_BAND_MAX  # type: ignore[arg-type]
    ):
        obj = _OutOfBand(obj)  # type: ignore[arg-type]
    return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)


def frame_size(inband: bytes, buffers: Sequence[pickle.PickleBuffer]) -> int:
    """Bytes that write_frame() needs for this value."""
    size = FRAME_HEADER.size + BUFFER_LENGTH.size * len(buffers) + len(inband)
    for buffer in buffers:
        size = _aligned(size) + buffer.raw().nbytes
    return size


def frame_parts(
    inband: bytes, buffers: Sequence[pickle.PickleBuffer]
) -> list[bytes | bytearray | memoryview]:
    """The frame of a value as consecutive pieces: the one statement of its layout.

    The header (buffer count, pickle length), each buffer's length, the
    pickle, then each buffer at an aligned offset (zero padding between).
    write_frame() copies them into memory; a spill writes them to a file.
    """
    raws = [buffer.raw() for buffer in buffers]
    head = bytearray(FRAME_HEADER.size + BUFFER_LENGTH.size * len(raws))
    FRAME_HEADER.pack_into(head, 0, len(raws), len(inband))
    for i, raw in enumerate(raws):
        BUFFER_LENGTH.pack_into(head, FRAME_HEADER.size + i * BUFFER_LENGTH.size, raw.nbytes)
    parts: list[bytes | bytearray | memoryview] = [head, inband]
    offset = len(head) + len(inband)
    for raw in raws:
        padding = _aligned(offset) - offset
        if padding:
            parts.append(bytes(padding))
        parts.append(raw)
        offset += padding + raw.nbytes
    return parts


def write_frame(target: memoryview, inband: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
    """Write a frame into *target* (at least frame_size() bytes), one copy per buffer."""
    offset = 0
    for part in frame_parts(inband, buffers):
        length = memoryview(part).nbytes
        target[offset : offset + length] = part
        offset += length


def read_frame(source: memoryview, copy: bool = False) -> object:
    """Rebuild the value in a frame.

    Buffers are handed to their types as read-only views of *source*: NumPy
    arrays keep using it (no copy), bytes and the like copy it once.  With
    *copy*, each buffer is first copied into a private, writable bytearray.
    """
    count, inband_length = FRAME_HEADER.unpack_from(source, 0)
    offset = FRAME_HEADER.size
    lengths = []
    for _ in range(count):
        lengths.append(BUFFER_LENGTH.unpack_from(source, offset)[0])
        offset += BUFFER_LENGTH.size
    inband = source[offset : offset + inband_length]
    offset += inband_length
    buffers: list[memoryview | bytearray] = []
    for length in lengths:
        offset = _aligned(offset)
        view = source[offset : offset + length]
        buffers.append(bytearray(view) if copy else view)
        offset += length
    # Views are not released here: an array built on one keeps using it.
    return pickle.loads(inband, buffers=buffers)


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


# --- exceptions ------------------------------------------------------------


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteException(Exception):
    """Stands in for an exception that could not be pickled.

    ``type_name`` is the qualified name of the original type, ``message``
    its ``str()``, ``traceback_text`` where it was raised.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(type_name, message, traceback_text)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


def dump_exception(exception: BaseException) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle an exception with its traceback text; never fails for pickling."""
    text = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    text = f'\n"""\n{text}"""'
    try:
        # The pickle of an exception holds its type, args and __dict__, not
        # its traceback, cause or context (frames do not pickle).  Some
        # exceptions pickle but cannot be rebuilt: try both ways here, in the
        # sender, where the stand-in can still say what went wrong.
        inband, buffers = dumps((exception, text))
        pickle.loads(inband, buffers=buffers)
        return inband, buffers
    except Exception:
        type_name = f"{type(exception).__module__}.{type(exception).__qualname__}"
        return dumps((RemoteException(type_name, _safe_str(exception), text), text))


def as_exception(loaded: object) -> BaseException:
    """The exception in what dump_exception() stored, its remote traceback chained."""
    exception: BaseException
    text: str
    exception, text = loaded  # type: ignore[misc]
    exception.__cause__ = RemoteTraceback(text)
    return exception


def _safe_str(exception: BaseException) -> str:
    try:
        return str(exception)
    except Exception:
        return f"<unprintable {type(exception).__name__}>"
