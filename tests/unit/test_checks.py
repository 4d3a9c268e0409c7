"""Argument checks shared by the public API."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from mpevent import _checks


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), (0, 0.0), (1, 1.0), (0.5, 0.5), (Fraction(1, 4), 0.25), (-3, -3.0)],
)
def test_check_timeout_accepts_numbers_and_none(given: object, expected: float | None) -> None:
    assert _checks.check_timeout(given) == expected


@pytest.mark.parametrize("bad", ["1", b"1", [], object(), 1j])
def test_check_timeout_refuses_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError, match="timeout must be a number"):
        _checks.check_timeout(bad)


def test_check_timeout_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        _checks.check_timeout(math.nan)


@pytest.mark.parametrize(("count", "available", "expected"), [(None, 3, 3), (0, 3, 0), (3, 3, 3)])
def test_check_count_accepts_none_and_range(count: object, available: int, expected: int) -> None:
    assert _checks.check_count(count, available) == expected


@pytest.mark.parametrize("count", [-1, 4, True, 2.0, "1"])
def test_check_count_refuses_out_of_range_and_non_ints(count: object) -> None:
    with pytest.raises((TypeError, ValueError), match="count must be"):
        _checks.check_count(count, 3)
