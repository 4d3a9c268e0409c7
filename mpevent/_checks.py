"""Validation of the arguments the public API shares: timeouts and counts.

Bad input raises a typed error that says what was wrong, before anything
changes.
"""

from __future__ import annotations

import math
import numbers


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
