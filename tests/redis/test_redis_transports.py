"""Redis over TLS and over a Unix socket, and clients killed mid-call.

Each runs against a real redis-server; "other hosts" are new interpreters
that share nothing with the test but the URL and the secret.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis_servers

import mpevent

AUTHKEY = "transport-test-key"

# Another host: opens the named objects through MPEVENT_URL, stores a value
# computed from what it read, and sets the Event.
_OTHER_HOST = textwrap.dedent(
    """
    import mpevent
    with mpevent.connect() as backend:
        question = backend.AsyncResult("question").get(timeout=30)
        backend.AsyncResult("answer").set(question * 2)
        backend.Event("answered").set()
    """
)


def _round_trip_with_another_host(url: str) -> None:
    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        question = backend.AsyncResult("question", create=True)
        answer = backend.AsyncResult("answer", create=True)
        answered = backend.Event("answered", create=True)
        env = dict(os.environ, MPEVENT_URL=url, MPEVENT_AUTHKEY=AUTHKEY)
        other = subprocess.Popen([sys.executable, "-c", _OTHER_HOST], env=env)
        try:
            question.set(b"x" * 100_000)
            assert answered.wait(60)
            assert answer.get(timeout=5) == b"x" * 200_000
            assert other.wait(60) == 0
        finally:
            other.kill()
            other.wait(10)
        # A handle pickles to where it lives, and comes back working.
        again = pickle.loads(pickle.dumps(answered))
        assert again.is_set() and isinstance(again, mpevent.Event)


def test_objects_cross_hosts_over_a_unix_socket(tmp_path: Path) -> None:
    with redis_servers.unix_server(tmp_path / "unix") as socket_path:
        url = f"unix://{socket_path}?db=0"
        _round_trip_with_another_host(url)
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            assert "unix://" in repr(backend)


def test_objects_cross_hosts_over_tls(tmp_path: Path) -> None:
    with redis_servers.tls_server(tmp_path / "tls") as (port, cert):
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        _round_trip_with_another_host(url)


def test_tls_refuses_a_server_it_does_not_trust(tmp_path: Path) -> None:
    # No CA given: the self-signed certificate is not trusted.
    with (
        redis_servers.tls_server(tmp_path / "tls") as (port, _),
        pytest.raises(mpevent.BackendUnavailable, match="cannot be reached"),
    ):
        mpevent.connect(f"rediss://127.0.0.1:{port}/0", authkey=AUTHKEY)


# A client that stores 8 MiB values and flips an Event as fast as it can,
# announcing each round, until it is killed.
_BUSY_CLIENT = textwrap.dedent(
    """
    import sys
    import mpevent
    with mpevent.connect() as backend:
        result = backend.AsyncResult("busy-result")
        flag = backend.Event("busy-flag")
        n = 0
        while True:
            n += 1
            result.set(bytes([n % 256]) * (8 << 20))
            flag.set()
            flag.clear()
            print(n, flush=True)
    """
)


def test_a_client_killed_mid_call_blocks_nobody(tmp_path: Path) -> None:
    with redis_servers.single_server(tmp_path / "redis") as port:
        url = f"redis://127.0.0.1:{port}/0"
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            result = backend.AsyncResult("busy-result", create=True)
            flag = backend.Event("busy-flag", create=True)
            env = dict(os.environ, MPEVENT_URL=url, MPEVENT_AUTHKEY=AUTHKEY)
            busy = subprocess.Popen(
                [sys.executable, "-c", _BUSY_CLIENT], env=env, stdout=subprocess.PIPE, text=True
            )
            try:
                assert busy.stdout is not None
                for _ in range(3):  # a few rounds done: it is in the middle of one now
                    assert busy.stdout.readline().strip()
                busy.send_signal(signal.SIGKILL)
                assert busy.wait(30) == -signal.SIGKILL
            finally:
                busy.kill()
                busy.wait(10)
                if busy.stdout is not None:
                    busy.stdout.close()
            # A whole value of one round, never a half-written one.
            value = result.get(timeout=5)
            assert len(value) == 8 << 20 and value.count(value[:1]) == len(value)
            # The Event and the result still work for everyone left.
            flag.clear()
            assert flag.wait(0.05) is False
            flag.set()
            assert flag.wait(5) is True
            result.set(b"after")
            assert pickle.loads(pickle.dumps(result)).get(timeout=5) == b"after"
