"""python -m mpevent doctor: what this machine and container allow, and what will fail.

Each check gives a level -- ``ok``, ``note`` (worth knowing), ``warn``
(something will fail for some programs) or ``fail`` (mpevent cannot work
as it should here) -- a one-line finding and, unless ok, the advice that
fixes it.  The exit status is 1 when any check fails or warns, 0 otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import secrets
import sys
import sysconfig
from typing import Any

from .._checks import format_size
from ..shm import _arena, _native, _segment, _spill

MiB = 1 << 20
# A /dev/shm smaller than this is a container's default (64 MiB) or less:
# results of a few tens of MiB will not fit.
SMALL_SHM = 256 * MiB


@dataclasses.dataclass
class Check:
    name: str
    level: str  # ok, note, warn, fail
    finding: str
    advice: str = ""
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_shm() -> Check:
    shm = _segment.SHM_DIR
    if not os.path.isdir(shm):
        return Check(
            "/dev/shm",
            "fail",
            f"{shm} does not exist",
            "mount a tmpfs there (docker: it is there by default; Kubernetes: an emptyDir "
            "volume with medium: Memory mounted on /dev/shm)",
        )
    if not os.access(shm, os.W_OK):
        return Check("/dev/shm", "fail", f"{shm} is not writable by this user", "fix its mode")
    stat = os.statvfs(shm)
    total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    cap, watermark = _arena.MAX_SHM, _arena.HEAP_WATERMARK
    facts = {"size": total, "free": free, "cap": cap, "watermark": watermark}
    finding = (
        f"{format_size(total)}, {format_size(free)} free; cap MPEVENT_MAX_SHM "
        f"{format_size(cap) if cap else 'none'}, "
        f"watermark MPEVENT_HEAP_WATERMARK {format_size(watermark)}"
    )
    if total < SMALL_SHM:
        return Check(
            "/dev/shm",
            "warn",
            finding + f" -- values near {format_size(free)} raise MemoryError",
            "give the container more: docker run --shm-size=1g (or --ipc=host); "
            "Kubernetes: an emptyDir with medium: Memory and a sizeLimit on /dev/shm",
            facts,
        )
    if cap and cap > total:
        return Check(
            "/dev/shm",
            "note",
            finding + " -- the cap is above what /dev/shm holds",
            "MPEVENT_MAX_SHM only helps below the size of /dev/shm",
            facts,
        )
    return Check("/dev/shm", "ok", finding, facts=facts)


def check_populate() -> Check:
    if _native.populate_supported():
        return Check(
            "page reservation",
            "ok",
            "MADV_POPULATE_WRITE works: a full /dev/shm is a MemoryError",
        )
    return Check(
        "page reservation",
        "warn",
        f"MADV_POPULATE_WRITE is missing (kernel {os.uname().release}, needs 5.14+): "
        "a full /dev/shm is a SIGBUS, not a MemoryError",
        "run on Linux 5.14 or later, or keep /dev/shm well above what values need",
    )


def check_locks() -> Check:
    """OFD locks decide who is alive; probe them on a scratch file in /dev/shm."""
    name = f"{_segment.PREFIX}doctor-{secrets.token_hex(4)}"
    try:
        fd = _segment.create(name, 0)
    except OSError as exc:
        return Check("liveness locks", "fail", f"cannot create a file in /dev/shm: {exc}")
    try:
        _segment.unlink(name)
        other = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        try:
            taken = _native.ofd_lock(fd, 0, 1, False)
            seen = _native.ofd_held(other, 0, 1)
        finally:
            os.close(other)
    except OSError as exc:
        return Check(
            "liveness locks",
            "fail",
            f"open-file-description locks do not work here: {exc}",
            "mpevent needs Linux 3.15+ with fcntl(F_OFD_SETLK) on tmpfs",
        )
    finally:
        os.close(fd)
    if taken and seen:
        return Check("liveness locks", "ok", "OFD locks work: the kernel says who is alive")
    return Check(
        "liveness locks",
        "fail",
        "an OFD lock was not seen by another open file description",
        "mpevent needs fcntl(F_OFD_SETLK) semantics (Linux 3.15+)",
    )


def check_pages() -> Check:
    """The page size arenas are laid out in: every process sharing one must agree."""
    page, huge = _native.PAGE, _native.HUGE_PAGE
    facts = {"page_size": page, "huge_page_size": huge, "machine": platform.machine()}
    finding = f"{format_size(page)} pages on {platform.machine()}" + (
        f", {format_size(huge)} transparent huge pages" if huge else ", no transparent huge pages"
    )
    return Check(
        "page size",
        "ok",
        finding + ": an arena is shared only with processes under the same page size",
        facts=facts,
    )


def check_interpreter() -> Check:
    """Which CPython this is: its version, GIL or free-threaded, main interpreter or not."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil_on = getattr(sys, "_is_gil_enabled", lambda: True)()
    main = _native.main_interpreter()
    build = "free-threaded" if free_threaded else "with the GIL"
    facts = {
        "implementation": platform.python_implementation(),
        "version": platform.python_version(),
        "free_threaded": free_threaded,
        "gil_enabled": gil_on,
        "main_interpreter": main,
    }
    finding = f"{platform.python_implementation()} {platform.python_version()}, {build}"
    if free_threaded and gil_on:
        return Check(
            "interpreter",
            "warn",
            finding + ", but the GIL is on",
            "a module imported here re-enabled it (PYTHON_GIL=0 forces it off); mpevent does not",
            facts=facts,
        )
    return Check(
        "interpreter", "ok", finding + ("" if main else ", in a subinterpreter"), facts=facts
    )


def check_huge_pages() -> Check:
    mode = _segment.huge_pages()
    facts = {"dev_shm_huge": mode}
    if mode in ("always", "within_size", "advise"):
        how = "mpevent asks for them" if mode == "advise" else "the mount gives them"
        return Check("shmem huge pages", "ok", f"/dev/shm huge={mode}: {how}", facts=facts)
    return Check(
        "shmem huge pages",
        "note",
        f"/dev/shm huge={mode}: large values fault in {format_size(_native.PAGE)} pages",
        "as root: mount -o remount,huge=advise /dev/shm (measured 1.2-1.5x faster kept values "
        "from 1 MiB; optional)",
        facts,
    )


def check_pid_namespace() -> Check:
    nspids: list[str] = []
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("NSpid:"):
                    nspids = line.split()[1:]
    except OSError:
        pass
    facts = {"nspid": nspids}
    if len(nspids) > 1:
        return Check(
            "PID namespace",
            "note",
            f"this process is pid {nspids[-1]} of a nested PID namespace (a container): "
            "containers that share /dev/shm with it (--ipc=host, a pod) share objects safely; "
            "liveness comes from kernel locks, not from pids",
            facts=facts,
        )
    return Check("PID namespace", "ok", "the host's (or the outermost visible)", facts=facts)


def check_spill() -> Check:
    directory = _spill.configured_dir()
    variable = _spill.VARIABLE
    setting = os.environ.get(variable, "").strip()
    if not directory:
        if setting:
            return Check(
                "spilling",
                "note",
                f"off ({variable}={setting}): a value larger than "
                "/dev/shm or the cap is a MemoryError",
                f"unset {variable} to spill to disk",
            )
        return Check(
            "spilling",
            "warn",
            "no directory on a disk found ($TMPDIR, /var/tmp, /tmp are "
            "all in memory or missing): values larger than /dev/shm will fail",
            f"set {variable} to a directory on a disk",
        )
    where = directory if os.path.isdir(directory) else os.path.dirname(directory)
    facts: dict[str, Any] = {"directory": directory}
    try:
        info = os.statvfs(where)
        kind = _native.fs_type(where)
    except OSError as exc:
        return Check(
            "spilling",
            "fail",
            f"{directory} cannot be used: {exc}",
            f"create it, or set {variable} to a directory on a disk",
        )
    free = info.f_bavail * info.f_frsize
    facts["free_bytes"] = free
    finding = f"to {directory} ({format_size(free)} free)"
    if not os.access(where, os.W_OK | os.X_OK):
        return Check(
            "spilling",
            "fail",
            finding + ", which this user cannot write",
            f"set {variable} to a writable directory",
            facts,
        )
    if kind in (0x01021994, 0x858458F6):
        return Check(
            "spilling",
            "warn",
            finding + ", on tmpfs: memory, like /dev/shm",
            f"set {variable} to a directory on a disk",
            facts,
        )
    return Check("spilling", "ok", finding, facts=facts)


def check_arenas() -> Check:
    names = [n for n in _segment.list_names() if not n.startswith(_segment.NAME_PREFIX)]
    abandoned = [n for n in _arena.clean(dry_run=True) if "/" not in n]  # arenas, not files
    facts = {"arenas": len(names), "abandoned": len(abandoned)}
    finding = f"{len(names)} arenas in /dev/shm, {len(abandoned)} abandoned"
    if abandoned:
        return Check(
            "arenas", "note", finding, "python -m mpevent clean removes the abandoned", facts
        )
    return Check("arenas", "ok", finding, facts=facts)


def check_redis() -> Check | None:
    url = os.environ.get("MPEVENT_URL")
    if not url or url.split("://", 1)[0] in ("local", "shm"):
        return None
    from .._urls import public_url

    shown = public_url(url)
    try:
        from ..redis import _connection
    except ImportError:
        return Check(
            "Redis",
            "fail",
            f"MPEVENT_URL={shown} but redis-py is not installed",
            "pip install 'mpevent[redis]'",
        )
    try:
        facts: dict[str, Any] = dict(_connection.inspect_server(url))
    except Exception as exc:  # any failure to reach it is the finding
        return Check(
            "Redis",
            "fail",
            f"{shown} does not answer: {exc}",
            "start the server, or fix MPEVENT_URL",
        )
    version, policy = facts["version"], facts["maxmemory-policy"]
    facts["reply parser"] = _connection.reply_parser()
    finding = f"{shown}: Redis {version}, maxmemory-policy {policy}"
    if _connection.too_old(version):
        return Check("Redis", "fail", finding + ": mpevent needs 7.0+", "upgrade the server", facts)
    if policy in _connection.EVICTING:
        return Check(
            "Redis",
            "warn",
            finding + ": the server may evict mpevent's objects",
            "CONFIG SET maxmemory-policy noeviction (or a server of its own)",
            facts,
        )
    if policy == "unknown":
        return Check(
            "Redis",
            "note",
            finding + " (CONFIG refused): make sure the server does not evict keys",
            facts=facts,
        )
    return Check("Redis", "ok", finding, facts=facts)


def run_checks() -> list[Check]:
    checks = [
        check_shm(),
        check_populate(),
        check_locks(),
        check_interpreter(),
        check_pages(),
        check_huge_pages(),
        check_pid_namespace(),
        check_spill(),
        check_arenas(),
    ]
    redis_check = check_redis()
    if redis_check is not None:
        checks.append(redis_check)
    return checks


def main(as_json: bool) -> int:
    checks = run_checks()
    bad = any(check.level in ("warn", "fail") for check in checks)
    if as_json:
        print(
            json.dumps({"ok": not bad, "checks": [dataclasses.asdict(c) for c in checks]}, indent=2)
        )
    else:
        for check in checks:
            print(f"{check.level:>4}  {check.name}: {check.finding}")
            if check.advice and check.level != "ok":
                print(f"      -> {check.advice}")
        print("everything mpevent needs is here" if not bad else "some of the above will fail")
    sys.stdout.flush()
    return 1 if bad else 0
