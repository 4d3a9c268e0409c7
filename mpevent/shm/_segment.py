"""POSIX shared-memory segments: create, open, list and unlink, nothing more.

We open ``/dev/shm/<name>`` ourselves instead of using
:class:`multiprocessing.shared_memory.SharedMemory`: on Python < 3.13 every
process that *attaches* to a SharedMemory registers it with its own
``resource_tracker``, which unlinks it (and warns "leaked") when that process
exits, even though others still use it (CPython gh-82300).  mpevent decides
itself who unlinks a segment (see ``_arena``), so the tracker stays out.

A process keeps one descriptor per arena it is attached to: its open
file description holds the process's liveness lock (``_arena``).
"""

from __future__ import annotations

import os

from .. import _checks
from . import _linux

SHM_DIR = "/dev/shm"
PREFIX = "mpevent-"
NAME_PREFIX = PREFIX + "name."  # object names (_names), not segments
NAME_MAX = 200


def check_name(name: object) -> str:
    """Return *name* if it can name a segment, else raise TypeError/ValueError."""
    return _checks.check_name(name, NAME_MAX, "a segment name")


_huge_mode: str | None = None


def huge_pages() -> str:
    """How the filesystem of /dev/shm gives out huge pages: never, advise, within_size, always.

    Its mount's ``huge=`` option (tmpfs; never by default), unless
    /sys/kernel/mm/transparent_hugepage/shmem_enabled forces (force) or
    forbids (deny) them for every mount.  Read once per process.
    """
    global _huge_mode
    if _huge_mode is not None:
        return _huge_mode
    mode = _linux.tmpfs_huge_pages(SHM_DIR)
    _huge_mode = mode
    return mode


def path_of(name: str) -> str:
    return os.path.join(SHM_DIR, check_name(name))


def create(name: str, size: int) -> int:
    """Create a new segment of *size* zero bytes, mode 0600; return its fd.

    Raises FileExistsError if the name is taken.  The file is sparse: pages
    cost memory only once they are touched.  The caller closes the fd.
    """
    fd = os.open(path_of(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask must not widen or narrow it
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(path_of(name))
        raise
    return fd


def open_existing(name: str) -> tuple[int, int]:
    """Open an existing segment of this user: (fd, size).  The caller closes fd.

    Raises FileNotFoundError if there is none, PermissionError if another
    user owns it.
    """
    fd = os.open(path_of(name), os.O_RDWR | os.O_CLOEXEC)
    try:
        stat = os.fstat(fd)
        if stat.st_uid != os.geteuid():
            raise PermissionError(
                f"segment {name!r} belongs to uid {stat.st_uid}, not to this user"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, stat.st_size


def is_at(fd: int, name: str) -> bool:
    """Whether *fd* is still the file that *name* names (not unlinked or replaced)."""
    try:
        here = os.stat(path_of(name))
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def unlink(name: str) -> bool:
    """Remove the segment's name; True if it was there."""
    try:
        os.unlink(path_of(name))
    except FileNotFoundError:
        return False
    return True


def list_names(prefix: str = PREFIX) -> list[str]:
    """Names of the segments in /dev/shm that start with *prefix*."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []
