"""Cleaning: unlinking arenas nobody is attached to, and reclaiming the dead in the rest.

``python -m mpevent clean`` and every new arena come here.  Whether
anyone is attached is one question to the kernel (a lock over the whole
attach-table range, ``_attach``): an arena a live process holds, in any
PID namespace, or one being created right now, is never unlinked.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from . import _native, _segment, _spill
from ._attach import AttachTable
from ._native import ATTACH_ENTRIES


def clean(dry_run: bool = False, mapped: Collection[str] = ()) -> list[str]:
    """Unlink arenas no live process is attached to, and their spill files; what went.

    Never unlinks an arena a live process is attached to (in any PID
    namespace), nor one being created right now; in live arenas, gives
    back the references of the processes that died attached and removes
    the spill files of writers that died before publishing.  Arenas in
    *mapped* (this process's own) are left alone.  Returns the arenas'
    names and the spill files' paths.
    """
    removed = []
    for name in _segment.list_names():
        if name.startswith(_segment.NAME_PREFIX) or name in mapped:
            continue  # object names are cleaned by _names
        try:
            fd, size = _segment.open_existing(name)
        except (FileNotFoundError, PermissionError):
            continue
        try:
            removed += _clean_one(name, fd, size, dry_run)
        finally:
            os.close(fd)
    return removed


def _clean_one(name: str, fd: int, size: int, dry_run: bool) -> list[str]:
    """Unlink one arena if abandoned, else reclaim its dead; what went (or would)."""
    formatted, version = _native.segment_kind(fd)
    if formatted and version != _native.LAYOUT_VERSION:
        return []  # another mpevent's layout: its liveness rules are not ours
    for attempt in range(2):
        # One call: does any process hold any byte of the attach table?
        if _native.ofd_lock(fd, 0, ATTACH_ENTRIES, False):
            try:
                if not formatted:  # never formatted: its creator died at once
                    return [name] if dry_run or _segment.unlink(name) else []
                native = _native.Arena(fd, size)
                settings = native.spill_settings()
                if dry_run:
                    return [name, *_spill.files_of(*settings)]
                native.mark_unlinked()  # a joiner waiting for our lock gives up
                if not _segment.unlink(name):
                    return []
                return [name, *_spill.remove_all(*settings)]
            finally:
                _native.ofd_unlock(fd, 0, ATTACH_ENTRIES)
        if attempt or not formatted:
            return []  # alive, or being created by a live process
        native = _native.Arena(fd, size)
        try:
            native.validate()
        except ValueError:
            return []
        if dry_run:
            return _spill.remove_orphans(native, dry_run=True)
        AttachTable(name, native, fd).reclaim_dead_processes()  # live: give back what the dead held
        return _spill.remove_orphans(native)
    return []
