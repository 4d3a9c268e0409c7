"""Validation of what users give us: timeouts, counts and sizes in the environment.

Bad input raises a typed error that says what was wrong, before anything
changes.
"""

from __future__ import annotations

import math
import numbers
import os
import re


def check_timeout(timeout: object) -> float | None:
    """Validate a timeout: None (forever) or a number of seconds.

    Negative means "do not wait", as in :mod:`threading`.  Raises TypeError
    for a non-number and ValueError for NaN.
    """
    if timeout is None:
        return None
    # The exact-type test first: the ABC check costs more than the wait(0) it guards.
    if type(timeout) not in (float, int) and not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__!r}"
        )
    seconds = float(timeout)  # type: ignore[arg-type]
    if math.isnan(seconds):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return seconds


def check_count(count: object, available: int) -> int:
    """Validate *count* of iwait()/wait(): None (all) or 0..available."""
    if count is None:
        return available
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int or None, not {type(count).__qualname__!r}")
    if not 0 <= count <= available:
        raise ValueError(
            f"count must be between 0 and {available} (the objects given), not {count}"
        )
    return count


NAME_MAX = 187  # what a /dev/shm file name of ours (200) leaves after its prefix
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_name(name: object, limit: int = NAME_MAX, what: str = "an object name") -> str:
    """Return *name* if it is a valid *what* (every backend's rules), else raise.

    TypeError for a non-string; ValueError for an empty or too long name, or
    one with characters other than letters, digits, '.', '_' and '-'.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__qualname__!r}")
    if not name or len(name) > limit:
        raise ValueError(f"{what} must be 1 to {limit} characters, got {len(name)}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{what.split(' ', 1)[1]} {name!r} may only hold letters, digits, '.', '_' and '-'"
            " (no '/')"
        )
    return name


def check_opened(name: object) -> str:
    """*name* for open(): a str (None would make a new anonymous object)."""
    if not isinstance(name, str):
        raise TypeError(
            f"open() needs the name of an existing object, a str, not "
            f"{type(name).__qualname__!r}; an anonymous object is shared by passing its "
            "handle (pickled, or as a process argument)"
        )
    return name


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def format_size(count: float) -> str:
    """*count* bytes for people: ``512 B``, ``64.0 MiB``, ``1.5 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # pragma: no cover


def parse_size(text: str, variable: str) -> int:
    """Bytes from ``"123"``, ``"64K"``, ``"512M"``, ``"2G"`` (binary units, optional ``B``).

    Raises ValueError naming *variable* (where the text came from) when it
    is not such a size.
    """
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{variable}={text!r} is not a size: give bytes as a number with an optional "
            "K, M, G or T suffix, such as 512M"
        )
    return int(value * _SIZE_UNITS[unit])


def size_from_env(variable: str, default: int) -> int:
    """The size in environment variable *variable*, or *default* if unset or empty."""
    text = os.environ.get(variable, "")
    return parse_size(text, variable) if text.strip() else default


def count_from_env(variable: str, maximum: int) -> int | None:
    """The integer 0..*maximum* in environment variable *variable*; None if unset or empty."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > maximum:
        raise ValueError(
            f"{variable}={text!r} is not a count: give a whole number of spins "
            f"from 0 (turns spinning off) to {maximum}, or unset it for the default"
        )
    return int(text)


def switch_from_env(variable: str, default: bool) -> bool:
    """The switch in environment variable *variable*: 1 on, 0 off; *default* if unset or empty."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if text not in ("0", "1"):
        raise ValueError(
            f"{variable}={text!r} is not a switch: give 1 (on) or 0 (off), "
            "or unset it for the default"
        )
    return text == "1"
