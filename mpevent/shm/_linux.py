"""The Linux-specific calls of the Python code, in one place (as ``os.c`` is for the C code).

What each would be elsewhere is in ``src/native/os.h``'s table of ports;
only Linux is built and run.  Everything here is a thin wrapper with the
fallback its caller needs where a container or an old kernel lacks the
feature (no ``/proc``, no ``O_TMPFILE``), so that a port replaces this
module, not its callers.

* ``eventfd``: an event loop's wakeups from the C notifier (``_loop``).
* abstract ``AF_UNIX`` datagram sockets: setters wake a loop directly
  (``_loop``; the address is ``_native.Arena.loop_address``).
* ``/proc/self/fd``: a new open file description of a segment whose name
  may be gone (``_attach``), and naming an ``O_TMPFILE`` spill file
  (``_spill``).
* ``/proc/self/mounts`` and ``/sys/kernel/mm``: how ``/dev/shm`` gives out
  huge pages (``_segment``).
* ``/proc/sys/kernel/random/boot_id``: which boot a pickled reference was
  made in (``_record``).
"""

from __future__ import annotations

import os
import socket


def eventfd() -> int:
    """A new non-blocking, close-on-exec eventfd."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def eventfd_read(fd: int) -> int:
    """The eventfd's count, reset to 0; BlockingIOError when it is 0."""
    return os.eventfd_read(fd)


def datagram_receiver(address: bytes) -> socket.socket | None:
    """A non-blocking datagram socket bound to abstract *address*, or None.

    None when the address is taken (a 1 in 2**32 clash of tokens) or unix
    sockets cannot be had here.
    """
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        receiver.setblocking(False)
        receiver.bind(address)
    except OSError:
        receiver.close()
        return None
    return receiver


def reopen(fd: int) -> int:
    """A new open file description of the file behind *fd* (even if its name is gone).

    OSError where there is no ``/proc`` (some containers): the caller opens
    the file by its name instead.
    """
    return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)


def create_unnamed(directory: str) -> int | None:
    """A new file in *directory* with no name yet (O_TMPFILE, mode 0600), or None.

    None where the filesystem or kernel has no O_TMPFILE, or there is no
    ``/proc`` to name the file through later (:func:`name_unnamed`).
    """
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):
        return None
    if os.path.exists(f"/proc/self/fd/{fd}"):
        return fd
    os.close(fd)
    return None


def name_unnamed(fd: int, directory: str, path: str) -> None:
    """Link the unnamed file *fd* into *path* (linkat through /proc, following it).

    A directory descriptor is passed only so that os.link calls linkat(2)
    with AT_SYMLINK_FOLLOW; plain link(2) would link /proc's symlink itself.
    """
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)


def tmpfs_huge_pages(directory: str) -> str:
    """How the tmpfs holding *directory* gives out huge pages: never, advise, within_size, always.

    Its mount's ``huge=`` option (never by default), unless
    /sys/kernel/mm/transparent_hugepage/shmem_enabled forces (force) or
    forbids (deny) them for every mount; "never" when neither can be read.
    """
    mode = "never"
    try:
        with open("/proc/self/mounts") as mounts:
            best = ""
            for line in mounts:
                fields = line.split()
                if len(fields) < 4 or fields[2] != "tmpfs":
                    continue
                point = fields[1]
                inside = point == directory or directory.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best = point
                    options = dict(o.partition("=")[::2] for o in fields[3].split(","))
                    mode = options.get("huge", "never")
        with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as policy:
            chosen = next((w.strip("[]") for w in policy.read().split() if w.startswith("[")), "")
        if chosen == "force":
            mode = "always"
        elif chosen == "deny":
            mode = "never"
    except OSError:
        pass
    return mode


def boot_id() -> str:
    """This boot's id (the kernel's random boot_id), or "" where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return ""
