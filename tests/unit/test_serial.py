"""Serialization: frames, out-of-band buffers, exceptions."""

from __future__ import annotations

import array
import pickle
import threading

import pytest

from mpevent import _serial


def _round_trip(value: object) -> object:
    inband, buffers = _serial.dumps(value)
    frame = bytearray(_serial.frame_size(inband, buffers))
    _serial.write_frame(memoryview(frame), inband, buffers)
    return _serial.read_frame(memoryview(frame))


def test_small_values_stay_in_band() -> None:
    inband, buffers = _serial.dumps({"a": b"x" * 100})
    assert buffers == []
    assert pickle.loads(inband) == {"a": b"x" * 100}


@pytest.mark.parametrize(
    "value",
    [
        b"b" * 200_000,
        bytearray(b"c" * 200_000),
        array.array("i", range(60_000)),
    ],
    ids=["bytes", "bytearray", "array"],
)
def test_large_buffers_go_out_of_band_and_come_back_equal(value: object) -> None:
    inband, buffers = _serial.dumps(value)
    assert len(buffers) == 1
    assert len(inband) < 200  # the data is not in the stream
    back = _round_trip(value)
    assert back == value
    assert type(back) is type(value)


def test_memoryview_comes_back_as_memoryview() -> None:
    back = _round_trip(memoryview(b"m" * 100_000))
    assert isinstance(back, memoryview)
    assert back.tobytes() == b"m" * 100_000


def test_unpicklable_value_names_its_type() -> None:
    with pytest.raises(TypeError, match="type 'lock'"):
        _serial.dumps(threading.Lock())


def test_exception_round_trip_chains_remote_traceback() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError as exc:
        inband, _ = _serial.dump_exception(exc)
    exception = _serial.as_exception(pickle.loads(inband))
    assert isinstance(exception, ValueError) and exception.args == ("bad thing",)
    assert isinstance(exception.__cause__, _serial.RemoteTraceback)
    assert "raise ValueError" in str(exception.__cause__)


class _NoRebuild(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt
        super().__init__(a + b)


def test_exception_that_cannot_be_rebuilt_becomes_a_stand_in() -> None:
    inband, _ = _serial.dump_exception(_NoRebuild(1, 2))
    exception = _serial.as_exception(pickle.loads(inband))
    assert isinstance(exception, _serial.RemoteException)
    assert exception.type_name.endswith("_NoRebuild")
    assert exception.message == "3"
