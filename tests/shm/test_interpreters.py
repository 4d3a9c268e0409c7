"""Subinterpreters: not supported, and saying so (3.14's ``concurrent.interpreters``).

The extension's state is per process (the watch, the fork hooks, the
arenas' maps), so it declares that it cannot be loaded in another
interpreter; importing mpevent there must fail with an ImportError that
says why, not share that state unsafely.
"""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="concurrent.interpreters is new in Python 3.14"
)


def test_importing_mpevent_in_a_subinterpreter_is_refused_with_the_reason() -> None:
    from concurrent import interpreters  # type: ignore[import-not-found,unused-ignore]

    interpreter = interpreters.create()
    try:
        with pytest.raises(interpreters.ExecutionFailed) as failed:
            interpreter.exec("import mpevent")
        assert "ImportError" in str(failed.value)
        assert "subinterpreters" in str(failed.value)
    finally:
        interpreter.close()


def test_the_main_interpreter_still_works_after_the_refusal() -> None:
    from concurrent import interpreters  # type: ignore[import-not-found,unused-ignore]

    import mpevent

    interpreter = interpreters.create()
    try:
        with pytest.raises(interpreters.ExecutionFailed):
            interpreter.exec("import mpevent")
    finally:
        interpreter.close()
    event = mpevent.Event()
    event.set()
    assert event.wait(1)
