"""Spilling: values that shared memory cannot hold go to a file on disk instead.

A container's ``/dev/shm`` is often 64 MiB, and ``MPEVENT_MAX_SHM`` may be
lower still.  When a value does not fit, ``_storage.store`` hands it here:
its frame (the same bytes a large heap block would hold) is written into a
file of the arena's *spill directory*, and the record's slot names the
file.  Readers map the file: NumPy arrays stay zero-copy, other values are
copied out once.  The protocol -- who creates, opens and unlinks the file,
under which lock -- is written at the top of ``src/native/spill.c``.

Where: ``MPEVENT_SPILL_DIR`` as read by the process that creates the arena
(like the cap), ``off`` to keep the MemoryError; by default
``mpevent-spill-<uid>`` (mode 0700) under ``$TMPDIR``, ``/var/tmp`` or
``/tmp``, the first that is on a disk filesystem (never tmpfs or ramfs:
spilling to memory would not help).  The directory is only looked at when
a value first spills, so a missing or read-only one is an error then, not
at import.

Files are mode 0600, named ``<arena>-<token>.spill``; a reader refuses a
file whose inode, owner or mode is not what the slot and this user expect
(another user's file, or one replaced under the same name).  A file goes
when its value is released (a new ``set()``, the result's last reference,
the reclaim of a dead process), when the arena goes, and under
``python -m mpevent clean``; a writer killed before publishing leaves an
orphan that the next reclaim or clean removes.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import pickle
import secrets
import stat
import time
from collections.abc import Sequence
from typing import Final

from .. import _serial
from . import _linux
from ._native import Arena as NativeArena
from ._native import fs_type, ofd_lock

VARIABLE: Final = "MPEVENT_SPILL_DIR"
_OFF: Final = ("off", "none", "no", "0", "false")
# statfs(2) f_type of filesystems that live in memory: spilling there is no spill.
_IN_MEMORY: Final = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}
_SUFFIX: Final = ".spill"


def configured_dir() -> str:
    """The spill directory a new arena records ("" = spilling off); touches nothing."""
    text = os.environ.get(VARIABLE, "").strip()
    if text.lower() in _OFF:
        return ""
    if text:
        return os.path.abspath(text)
    for base in (os.environ.get("TMPDIR", ""), "/var/tmp", "/tmp"):
        if base and _on_disk(base):
            return os.path.join(os.path.abspath(base), f"mpevent-spill-{os.geteuid()}")
    return ""  # no disk at all: the MemoryError says how to name one


def _on_disk(path: str) -> bool:
    try:
        return fs_type(path) not in _IN_MEMORY
    except OSError:
        return False


def file_name(arena_name: str, token: int) -> str:
    return f"{arena_name}-{token:016x}{_SUFFIX}"


def _default_dir(directory: str) -> bool:
    return os.path.basename(directory) == f"mpevent-spill-{os.geteuid()}"


def _ready(directory: str) -> None:
    """Make sure *directory* can take spill files; OSError saying why not."""
    if _default_dir(directory):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise PermissionError(
                errno.EPERM,
                f"{directory} is not a directory of this user with mode 0700 (another user "
                f"may have made it): remove it, or set {VARIABLE} to a directory of your own",
            )
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT,
            f"the spill directory {directory} does not exist: create it or set "
            f"{VARIABLE} to one that does ({VARIABLE}=off turns spilling off)",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES,
            f"the spill directory {directory} is not writable by this process: "
            f"set {VARIABLE} to a directory it can write",
        )


def store(
    native: NativeArena,
    index: int,
    which: int,
    inband: bytes,
    buffers: Sequence[pickle.PickleBuffer],
    size: int,
    cause: MemoryError,
) -> None:
    """Write the frame into a new spill file and publish it in slot *which*.

    *cause* is why shared memory could not take the value.  Raises
    MemoryError naming both limits when the spill directory cannot take it
    either (full, missing, not writable, or spilling off); the slot then
    keeps what it held and no file is left.
    """
    directory, name = native.spill_settings()
    if not directory:
        raise MemoryError(
            f"{cause} -- and spilling to disk is off for this arena ({VARIABLE}=off, or no "
            f"directory on a disk was found): set {VARIABLE} to a directory on a disk"
        ) from cause
    try:
        _ready(directory)
        _write(native, index, which, inband, buffers, size, directory, name)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            how = (
                f"the spill directory {directory} is full too: free space there or set "
                f"{VARIABLE} to a larger disk"
            )
        else:
            how = f"it could not spill to disk either: {exc.strerror or exc}"
        raise MemoryError(f"{cause} -- and {how}") from exc


def _write(
    native: NativeArena,
    index: int,
    which: int,
    inband: bytes,
    buffers: Sequence[pickle.PickleBuffer],
    size: int,
    directory: str,
    name: str,
) -> None:
    token = secrets.randbits(64)
    path = os.path.join(directory, file_name(name, token))
    fd, named = _create(directory, path)
    try:
        ofd_lock(fd, 0, 1, False)  # "a live writer": kept until after publishing
        os.posix_fallocate(fd, 0, size)  # the disk's room, taken at once: ENOSPC now
        _write_all(fd, _serial.frame_parts(inband, buffers))
        if not named:  # give it its name only now: locked and whole
            _linux.name_unnamed(fd, directory, path)
            named = True
        native.publish_spill(index, which, token, os.fstat(fd).st_ino, size)
    except BaseException:
        if named:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        os.close(fd)


# The most one write(2) moves (Linux caps a call near 2 GiB).
_WRITE_MAX: Final = 1 << 30


def _write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Write *parts* one after the other from offset 0.

    write(2), not a shared mapping: the kernel copies into the page cache in
    bulk, where a mapping would fault each fresh page in one at a time
    (measured 2-5x slower for 256 MiB; docs/design.md, "Values").
    """
    offset = 0
    for part in parts:
        with memoryview(part) as view, view.cast("B") as data:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done : done + _WRITE_MAX], offset + done)
            offset += done


def _create(directory: str, path: str) -> tuple[int, bool]:
    """A new spill file: (descriptor, whether it has its name yet).

    Unnamed (O_TMPFILE) where the filesystem allows, so that no cleaner can
    see it before its writer holds its lock; otherwise created under its
    name at once, and cleaners leave young files alone (ORPHAN_AGE).
    """
    fd = _linux.create_unnamed(directory)
    if fd is not None:
        return fd, False
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(path, flags, 0o600), True


def open_view(native: NativeArena, fd: int, token: int, inode: int, length: int) -> memoryview:
    """The frame of a spilled value, mapped read-only; closes *fd* (from ``read``)."""
    try:
        info = os.fstat(fd)
        expected = min(info.st_size, 0xFFFFFFFF)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_ino != inode
            or info.st_uid != os.geteuid()
            or info.st_mode & 0o077
            or expected != length
        ):
            directory, name = native.spill_settings()
            raise PermissionError(
                errno.EPERM,
                f"the spill file {os.path.join(directory, file_name(name, token))} is not the "
                "one this result names (replaced, or another user's, or readable by others): "
                "refusing to read it",
            )
        # Not MAP_POPULATE: the kernel maps a fault's neighbours too (fault
        # around), and populating up front measured no faster, even for a
        # reader that touches every page (docs/design.md, "Values").
        pages = mmap.mmap(fd, info.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    return memoryview(pages)


def files_of(directory: str, name: str) -> list[str]:
    """The paths of arena *name*'s spill files in *directory*."""
    if not directory:
        return []
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    prefix = f"{name}-"
    return [
        os.path.join(directory, e) for e in entries if e.startswith(prefix) and e.endswith(_SUFFIX)
    ]


def remove_all(directory: str, name: str) -> list[str]:
    """Unlink every spill file of arena *name* (it is gone); the paths removed."""
    removed = []
    for path in files_of(directory, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


# Seconds a named spill file must be old before a cleaner may take it for
# an orphan: covers a writer between creating it and locking it, on
# filesystems without O_TMPFILE.
ORPHAN_AGE: Final = 60.0


def remove_orphans(native: NativeArena, dry_run: bool = False) -> list[str]:
    """Unlink the spill files of a live arena that no slot names and no live writer holds."""
    directory, name = native.spill_settings()
    if not directory:
        return []
    held: dict[str, int] = {}  # path -> descriptor whose lock we hold
    try:
        for path in files_of(directory, name):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue  # gone meanwhile, or not ours to touch
            young = time.time() - os.fstat(fd).st_mtime < ORPHAN_AGE
            # A lock someone holds: a live writer, not yet published (spill.c).
            if young or not ofd_lock(fd, 0, 1, False):
                os.close(fd)
                continue
            held[path] = fd
        if not held:
            return []
        # Read after every lock is ours: a file published before its writer
        # let go of it is seen named.
        named = {file_name(name, token) for token in native.spill_tokens()}
        orphans = [path for path in held if os.path.basename(path) not in named]
        if not dry_run:
            for path in orphans:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return orphans
    finally:
        for fd in held.values():
            os.close(fd)
