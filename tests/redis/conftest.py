"""The Redis tests' one teardown: no backend outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis_servers


@pytest.fixture(autouse=True)
def _forget_backends() -> Iterator[None]:
    yield
    redis_servers.forget_backends()
