"""Servers that lose keys: eviction, FLUSHDB and a refused CONFIG, on real servers."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_servers

import mpevent

AUTHKEY = "eviction-test-key"


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    """start(*redis-server options) -> port; every server started is stopped."""
    redis_servers.require_redis()
    ports: list[int] = []

    def start(*extra: str) -> int:
        port = redis_servers.free_port()
        redis_servers.start_server(tmp_path / f"redis-{port}", port, *extra)
        ports.append(port)
        return port

    yield start
    for port in ports:
        redis_servers.stop_server(port)


def _waiter(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        begin = time.monotonic()
        try:
            outcome["returned"] = call()
        except LookupError as exc:
            outcome["error"] = exc
        outcome["after"] = time.monotonic() - begin

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_an_evicting_server_is_warned_about_and_evicted_waiters_raise(started: Any) -> None:
    import redis

    port = started("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
    url = f"redis://127.0.0.1:{port}/0"
    with pytest.warns(RuntimeWarning, match="evicts keys under memory pressure.*noeviction"):
        backend = mpevent.connect(url, authkey=AUTHKEY)
    event = backend.Event()
    thread, outcome = _waiter(lambda: event.wait(30))
    client = redis.Redis(port=port)
    try:
        filler = 0
        while client.exists(event._record.key) and filler < 20_000:
            client.set(f"filler:{filler}", b"x" * 100_000)
            filler += 1
        assert not client.exists(event._record.key), "the server never evicted our key"
        vanished = time.monotonic()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - vanished < 3
        assert "returned" not in outcome, "an evicted Event looked merely unset"
        assert "evicted" in str(outcome["error"])
    finally:
        client.close()
        thread.join(30)


@pytest.mark.parametrize("kind", ["Event.wait", "AsyncResult.get", "mpevent.wait"])
def test_flushdb_under_a_waiter_raises_lookup_error_within_about_a_second(
    started: Any, kind: str
) -> None:
    import redis

    port = started()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # noeviction: no warning
        backend = mpevent.connect(f"redis://127.0.0.1:{port}/0", authkey=AUTHKEY)
    event, result = backend.Event(), backend.AsyncResult()
    calls = {
        "Event.wait": lambda: event.wait(30),
        "AsyncResult.get": lambda: result.get(timeout=30),
        "mpevent.wait": lambda: mpevent.wait([event, result], timeout=30),
    }
    thread, outcome = _waiter(calls[kind])
    time.sleep(0.2)  # let it park (a flush before it subscribes is caught the same way)
    redis.Redis(port=port).flushdb()
    flushed = time.monotonic()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - flushed < 3
    assert isinstance(outcome.get("error"), LookupError), outcome
    assert "FLUSHDB" in str(outcome["error"])


def test_a_vanished_object_ends_rawlink_callbacks_and_wait_async(started: Any) -> None:
    import asyncio

    import redis

    port = started()
    backend = mpevent.connect(f"redis://127.0.0.1:{port}/0", authkey=AUTHKEY)
    event, result = backend.Event(), backend.AsyncResult()
    called = threading.Event()
    seen: list[BaseException] = []

    def on_set(obj: Any) -> None:
        try:
            obj.get()
        except LookupError as exc:
            seen.append(exc)
        called.set()

    result.rawlink(on_set)

    async def main() -> BaseException | None:
        waiting = asyncio.ensure_future(event.wait_async(30))
        await asyncio.sleep(0.2)  # parked in the loop (a flush before is caught alike)
        redis.Redis(port=port).flushdb()
        try:
            await asyncio.wait_for(waiting, 10)
        except LookupError as exc:
            return exc
        return None

    flushed = time.monotonic()
    error = asyncio.run(main())
    assert isinstance(error, LookupError) and "FLUSHDB" in str(error), error
    assert called.wait(10), "the callback of a vanished result never ran"
    assert time.monotonic() - flushed < 5
    assert seen and "FLUSHDB" in str(seen[0]), seen


def test_a_server_that_refuses_config_is_said_once_and_used(started: Any, tmp_path: Path) -> None:
    config = tmp_path / "no-config.conf"
    config.write_text('rename-command CONFIG ""\n')
    port = started("--include", str(config))
    url = f"redis://127.0.0.1:{port}/0"
    with pytest.warns(RuntimeWarning, match="cannot read maxmemory-policy"):
        backend = mpevent.connect(url, authkey=AUTHKEY)
    event = backend.Event()
    event.set()
    assert event.wait(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per server and process
        again = mpevent.connect(url + "?prefix=other", authkey=AUTHKEY)
        assert not again.Event().is_set()


def test_doctor_reports_the_version_and_an_evicting_policy(started: Any) -> None:
    import os
    import subprocess
    import sys

    port = started("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
    done = subprocess.run(
        [sys.executable, "-m", "mpevent", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MPEVENT_URL": f"redis://127.0.0.1:{port}/0"},
    )
    assert done.returncode == 1
    assert "maxmemory-policy volatile-lru: the server may evict" in done.stdout
    assert "noeviction" in done.stdout
    version = (
        subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)
        .stdout.split("v=")[1]
        .split()[0]
    )
    assert f"redis://127.0.0.1:{port}/0: Redis {version}" in done.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "mpevent", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MPEVENT_URL": f"redis://127.0.0.1:{port}/0"},
    )
    import json

    from mpevent.redis import _connection

    (check,) = [c for c in json.loads(as_json.stdout)["checks"] if c["name"] == "Redis"]
    assert check["facts"]["reply parser"] == _connection.reply_parser()


def test_a_full_server_raises_memory_error_and_changes_nothing(started: Any) -> None:
    import redis

    port = started("--maxmemory-policy", "noeviction")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port)
    try:
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            event, result = backend.Event(), backend.AsyncResult()
            filler = [f"filler:{i}" for i in range(200)]
            for key in filler:
                client.set(key, b"x" * 10_000)
            # Full: maxmemory well below what is used, and nothing to evict.
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory", used // 2)
            large = b"v" * 100_000  # stored by a MULTI (RedisRecord.store)
            for call in (
                event.set,
                lambda: result.set(b"v" * 1000),
                lambda: result.set(large),
                backend.Event,
            ):
                with pytest.raises(MemoryError, match=r"out of memory.*nothing was changed"):
                    call()
            assert not event.is_set() and not result.ready()  # reads still work
            assert event.wait(0) is False
            client.config_set("maxmemory", 0)  # room again: the same objects work
            event.set()
            result.set(b"v" * 1000)
            assert event.is_set() and result.get(timeout=5) == b"v" * 1000
    finally:
        client.close()


def test_a_user_the_server_forbids_a_command_gets_permission_error(started: Any) -> None:
    import redis

    port = started()
    admin = redis.Redis(port=port)
    try:
        admin.execute_command(
            "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval"
        )
        with mpevent.connect(f"redis://limited:pw@127.0.0.1:{port}/0", authkey=AUTHKEY) as backend:
            with pytest.raises(PermissionError, match=r"may not run.*ACL SETUSER") as raised:
                backend.Event()
            assert "pw@" not in str(raised.value)  # the password stays out of the message
        assert admin.dbsize() == 0  # nothing was created
    finally:
        admin.close()


def test_a_value_larger_than_the_server_accepts_is_refused_before_sending(started: Any) -> None:
    port = started("--proto-max-bulk-len", "1mb")
    with mpevent.connect(f"redis://127.0.0.1:{port}/0", authkey=AUTHKEY) as backend:
        result = backend.AsyncResult()
        with pytest.raises(MemoryError, match=r"larger than .* accepts \(proto-max-bulk-len"):
            result.set(bytes(2 << 20))
        assert not result.ready()  # nothing changed, and the connection is still good
        result.set(bytes(100_000))
        assert result.get(timeout=5) == bytes(100_000)
