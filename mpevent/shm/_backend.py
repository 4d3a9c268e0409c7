"""LocalBackend: ``mpevent.connect("local://")`` -- this machine's shared memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._base import BackendBase
from .._checks import format_size
from .._interface import CleanReport
from . import _arena, _names, _segment
from ._objects import AsyncResult, Event

if TYPE_CHECKING:
    from .._interface import Backend


class LocalBackend(BackendBase):
    """This machine's shared memory: the objects ``mpevent.Event()`` makes."""

    Event = Event
    AsyncResult = AsyncResult

    def __repr__(self) -> str:
        return "<mpevent shared-memory backend>"

    def names(self) -> list[str]:
        return sorted(_names.names())

    def open(self, name: str) -> Any:
        kind = _names.lookup(name).kind
        for cls in (Event, AsyncResult):
            if kind == cls._KIND:
                return cls.open(name)
        raise TypeError(f"{name!r} is an object of unknown kind {kind}")

    def summary(self) -> list[str]:
        lines = ["arenas:"]
        for name in _segment.list_names():
            if name.startswith(_segment.NAME_PREFIX):
                continue
            try:
                arena = _arena.Arena.open_for_inspection(name)
            except (OSError, ValueError) as exc:
                lines.append(f"  {name}: unreadable ({exc})")
                continue
            try:
                stats = arena.native.statistics()
                spill_dir = arena.native.spill_settings()[0]
                heap = arena.native.heap_statistics()
                processes = arena.attached_processes()
            finally:
                arena.close_inspection()
            # Pids are each process's own (another container's mean nothing
            # here); alive or dead is what the kernel's locks say.
            owners = ", ".join(
                f"{p.pid or '?'}"
                f"{' (dead, being reclaimed)' if p.reclaiming else '' if p.alive else ' (dead)'}"
                for p in processes
            )
            cap = stats["shm_cap"]
            in_use = heap["small_used"] + heap["large_used"]
            resident = heap["small_reserved"] + heap["large_resident"]
            lines += [
                f"  {name}: processes [{owners}], {stats['records_live']} objects, "
                f"{stats['slots_live']} waiter slots in use, "
                f"{stats['recoveries']} locks recovered from dead holders",
                f"    shared memory: {format_size(stats['shm_reserved'])} reserved"
                f" (cap {format_size(cap) if cap else 'none: what /dev/shm holds'})",
                f"    value heap: {format_size(in_use)} in use, "
                f"{format_size(heap['large_free_resident'])} free and kept "
                f"(watermark {format_size(heap['free_watermark'])}), "
                f"{format_size(resident)} faulted in, "
                f"{format_size(heap['large_given_back'])} given back to the OS",
                f"    spilled to disk: {stats['spilled_values']} values, "
                f"{format_size(stats['spilled_bytes'])}"
                f" in {spill_dir or 'nowhere (spilling is off)'}",
            ]
        return lines

    def clean(self, dry_run: bool = False) -> CleanReport:
        removed = _arena.clean(dry_run=dry_run) + _names.clean(dry_run=dry_run)
        return CleanReport(removed, "arenas and names of processes that were killed")


if TYPE_CHECKING:
    _conforms: type[Backend] = LocalBackend  # mypy proves LocalBackend is a Backend
