"""Record: this process's counted reference to one record of an arena.

A record lives as long as some process references it.  Its reference count
(in shared memory, see ``_native.c``) counts

* one per live :class:`Record` object, in any process;
* one per pickle in flight: pickling *pins* the record, so a handle sent to a
  Pool worker survives the sender dropping its own at once, and the first
  unpickling *adopts* that reference instead of taking a new one.

A forked child inherits its parent's Record objects; it takes a reference
for each of them right after the fork so either side can drop its own.  A
process that dies without running its finalizers (SIGKILL, ``os._exit``)
leaves its references behind: its records are reclaimed with the arena.

The public classes (``event.py``, ``asyncresult.py``) hold a Record and know
nothing of arenas; a second backend only needs to offer the same methods.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Final, NamedTuple

from . import _arena
from ._arena import Arena


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return ""


BOOT_ID: Final = _boot_id()


class Reference(NamedTuple):
    """What a pickled handle carries: names and numbers, never the state."""

    arena: str
    record: int
    serial: int
    kind: int
    boot_id: str
    uid: int


# Called with a freed record's payload so its kind can release what the
# payload points to (AsyncResult's value storage).
ON_FREE: dict[int, Callable[[Arena, bytes], None]] = {}

_live: weakref.WeakSet[Record] = weakref.WeakSet()


class Record:
    """A counted reference to one record; released when garbage collected."""

    __slots__ = ("__weakref__", "arena", "held", "index", "kind", "native", "serial")

    def __init__(self, arena: Arena, index: int, serial: int, kind: int) -> None:
        self.arena = arena
        self.native = arena.native
        self.index = index
        self.serial = serial
        self.kind = kind
        self.held = True
        _live.add(self)

    @classmethod
    def allocate(cls, kind: int) -> Record:
        """A new record of *kind* (flag down, no waiters)."""
        arena, index, serial = _arena.allocate(kind)
        return cls(arena, index, serial, kind)

    @classmethod
    def from_reference(cls, reference: Reference, expected_kind: int, adopt: bool = True) -> Record:
        """Rebuild a reference that was pickled (in this or another process).

        *adopt*: take over the reference the pickle pinned (False: take a
        new one, as for a name).  Raises ValueError for a handle made on
        another machine, PermissionError for one of another user,
        FileNotFoundError if its arena is gone, LookupError if its record
        was freed, TypeError if it is a handle of another kind.
        """
        if reference.boot_id != BOOT_ID:
            raise ValueError(
                "this mpevent handle was pickled on another machine (or before a reboot); "
                "shared-memory objects only cross processes of one machine"
            )
        if reference.uid != os.geteuid():
            raise PermissionError(
                f"this mpevent handle belongs to uid {reference.uid}, not to uid {os.geteuid()}"
            )
        if reference.kind != expected_kind:
            raise TypeError(
                f"handle of kind {reference.kind} cannot be rebuilt as kind {expected_kind}"
            )
        arena = _arena.by_name(reference.arena)
        arena.native.record_retain(reference.record, reference.serial, adopt)
        return cls(arena, reference.record, reference.serial, reference.kind)

    def reference(self) -> Reference:
        """Pin the record for a pickle and describe it."""
        self.native.record_pin(self.index)
        return self.describe()

    def describe(self) -> Reference:
        """Describe the record without taking a reference."""
        return Reference(self.arena.name, self.index, self.serial, self.kind, BOOT_ID, os.geteuid())

    def release(self) -> None:
        """Drop this reference now (once); the record is freed with the last one."""
        if not self.held:
            return
        self.held = False
        payload = self.native.record_release(self.index)
        if payload is not None:
            on_free = ON_FREE.get(self.kind)
            if on_free is not None:
                on_free(self.arena, payload)

    def __del__(self) -> None:
        # No contextlib here: at interpreter shutdown module globals may be gone.
        try:  # noqa: SIM105
            self.release()
        except Exception:  # interpreter shutdown: nothing left to release into
            pass

    @property
    def address(self) -> str:
        return f"{self.arena.name}#{self.index}"


def _release_all() -> None:
    for record in list(_live):
        record.release()


_arena.BEFORE_LEAVING.append(_release_all)


def _after_fork_in_child() -> None:
    for record in list(_live):
        if record.held:
            record.native.record_retain(record.index, record.serial, False)


# Registered after _arena's own handler, so the arenas are joined first.
os.register_at_fork(after_in_child=_after_fork_in_child)
