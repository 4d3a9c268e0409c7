"""A value on the server: its signed frame, and the sizes that decide how it travels.

A value is stored as the frame of ``_serial`` with an HMAC-SHA256 of
``MPEVENT_AUTHKEY`` over the object's key, the slot and the frame; a
reader checks it before it unpickles anything.  Three sizes decide the
path (``RedisRecord.store`` and ``load``, the scripts in ``_scripts``):

- up to CARRIED_MAX the frame also travels in the set()'s message, and a
  get() blocked when it comes takes it from there (the per-thread stash
  below) with no second round trip;
- above it the frame is stored past Lua (a plain HSET in a MULTI), where
  the server allows (one server; not a cluster);
- above LOAD_INLINE_MAX it is read past Lua too (a plain HMGET after LOAD).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Final

# Every subscriber of the channel receives a carried frame, so large ones
# are left to LOAD.
CARRIED_MAX: Final = 8192
# A second round trip costs less than Lua's copies above this (1 MiB took
# 2.1 ms of the server's time as LOAD against 0.13 ms as HGET).
LOAD_INLINE_MAX: Final = 256 * 1024
ANY_SIZE: Final = 1 << 62  # LOAD's limit when it must return the frame whole
SIGNATURE_SIZE: Final = hashlib.sha256().digest_size


def sign(authkey: bytes, key: str, slot: int, frame: bytes | bytearray) -> bytes:
    """The HMAC of *frame* as the content of *slot* of the object at *key*."""
    mac = hmac.new(authkey, digestmod=hashlib.sha256)
    mac.update(f"{key}\0{slot}\0".encode())
    mac.update(frame)
    return mac.digest()


def signed(
    authkey: bytes, key: str, slot: int, frame: bytes | None, signature: bytes | None
) -> bool:
    """True if *signature* is *frame*'s, made with *authkey* (compared in constant time)."""
    if frame is None or signature is None:
        return False
    return hmac.compare_digest(signature, sign(authkey, key, slot, frame))


def split_carried(signed_frame: bytes) -> tuple[bytes, bytes]:
    """(signature, frame) of what a message carried: ``<signature><frame>``."""
    return signed_frame[:SIGNATURE_SIZE], signed_frame[SIGNATURE_SIZE:]


class _Carried(threading.local):
    """Per thread: what the message that ended its last wait carried, by key."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[int, int, bytes]] = {}


_carried = _Carried()


def keep_carried(key: str, generation: int, slot: int, signed_frame: bytes) -> None:
    """Keep what the message of *generation* carried, for this thread's next load()."""
    _carried.by_key[key] = (generation, slot, signed_frame)


def take_carried(key: str) -> tuple[int, int, bytes] | None:
    """(generation, slot, signed frame) kept for *key* by this thread, removed; or None."""
    return _carried.by_key.pop(key, None)
