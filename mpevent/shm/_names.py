"""Names: open an object from an unrelated process by a name you choose.

A name is a small file ``/dev/shm/mpevent-name.<name>`` (mode 0600) that
holds the object's reference as JSON.  Creating it is atomic and exclusive
(written aside, then hard-linked into place: ``FileExistsError`` if taken);
the name holds a reference to the record, so the object outlives the
process that named it, until :meth:`remove_name` or until every process
using its arena has exited.  ``clean()`` removes names whose arena is gone.
"""

from __future__ import annotations

import json
import os
import secrets

from .. import _checks
from . import _segment
from ._record import Record, Reference

PREFIX = _segment.NAME_PREFIX
assert len(PREFIX) + _checks.NAME_MAX <= _segment.NAME_MAX


check = _checks.check_name


def _path(name: str) -> str:
    return _segment.path_of(PREFIX + check(name))


def publish(name: str, record: Record) -> None:
    """Give *record* the name; FileExistsError if the name is taken.

    The name takes a reference of its own, dropped by :func:`remove`.
    """
    path = _path(name)
    reference = record.describe()
    aside = f"{path}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(reference._asdict()).encode())
        finally:
            os.close(fd)
        record.native.record_retain(record.index, record.serial, False)
        try:
            os.link(aside, path)
        except BaseException:
            record.native.record_release(record.index)
            raise
    except FileExistsError:
        raise FileExistsError(f"an mpevent object named {name!r} already exists") from None
    finally:
        os.unlink(aside)


def lookup(name: str) -> Reference:
    """The reference stored under *name*; FileNotFoundError if there is none."""
    try:
        with open(_path(name), "rb") as file:
            stat = os.fstat(file.fileno())
            if stat.st_uid != os.geteuid():
                raise PermissionError(f"mpevent object {name!r} belongs to another user")
            return Reference(**json.loads(file.read()))
    except FileNotFoundError:
        raise FileNotFoundError(f"no mpevent object is named {name!r}") from None


def remove(name: str, record: Record) -> None:
    """Remove *record*'s name and drop the name's reference.

    The caller's own reference keeps the record alive meanwhile.
    """
    reference = lookup(name)
    if (reference.arena, reference.record, reference.serial) != (
        record.arena.name,
        record.index,
        record.serial,
    ):
        raise ValueError(f"the name {name!r} belongs to another object")
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        raise FileNotFoundError(f"no mpevent object is named {name!r}") from None
    record.native.record_release(record.index)


def names() -> list[str]:
    """Every object name of this user."""
    return [n[len(PREFIX) :] for n in _segment.list_names(PREFIX) if not n.endswith(".tmp")]


def clean(dry_run: bool = False) -> list[str]:
    """Remove names whose arena is gone; return the removed file names."""
    removed = []
    for name in names():
        try:
            reference = lookup(name)
        except (FileNotFoundError, PermissionError, ValueError, TypeError):
            continue
        arena_gone = not os.path.exists(_segment.path_of(reference.arena))
        if arena_gone and (dry_run or _unlink_quietly(_path(name))):
            removed.append(PREFIX + name)
    return removed


def _unlink_quietly(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
