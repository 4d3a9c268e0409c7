"""What only the Redis backend has: secrets, signatures, expiry, a server that goes away."""

from __future__ import annotations

import pickle
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_servers

import mpevent

PASSWORD = "s3cret-Pa55word"
AUTHKEY = "redis-test-key"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    with redis_servers.single_server(tmp_path / "redis") as port:
        yield port
    redis_servers.forget_backends()  # before the server is gone: no retries against it


def _until_subscribed(backend: Any, obj: Any, count: int) -> None:
    """Return once *count* waiters or links are subscribed in this process.

    Links (rawlink, asyncio) subscribe on the node's listener; blocking
    waits on their thread's own inbox.
    """
    from mpevent.redis import _inbox, _listener

    listener = _listener.listener_for(backend.connection.node_url(obj._record.channel))

    def subscribed() -> int:
        return listener.subscribers() + _inbox.waiting()

    deadline = time.monotonic() + 10
    while subscribed() < count and time.monotonic() < deadline:
        time.sleep(0.01)  # subscribing has no event to wait on
    assert subscribed() == count


def _parked_waiter(
    backend: Any, event: Any, timeout: float, subscribed: int = 1
) -> tuple[threading.Thread, list[bool]]:
    """A thread blocked in event.wait(timeout), returned once it is subscribed.

    *subscribed*: how many of the event's waiters and links this process
    then has.  The list receives wait()'s result.
    """
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(event.wait(timeout)))
    waiter.start()
    _until_subscribed(backend, event, subscribed)
    return waiter, outcome


def _touch(path: Path, padding: bytes) -> None:
    path.touch()


class _TouchesAFile:
    """A value whose unpickling has a visible effect: it creates a file.

    *size*: bytes of padding, to make the value large.
    """

    def __init__(self, path: Path, size: int = 0) -> None:
        self.path = path
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch, (self.path, bytes(self.size)))


def test_no_password_in_repr_pickle_or_errors(tmp_path: Path) -> None:
    with redis_servers.single_server(tmp_path / "auth", password=PASSWORD) as port:
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            event = backend.Event()
            texts = [repr(backend), repr(event), pickle.dumps(event).decode("latin-1")]
            with pytest.raises(FileNotFoundError) as missing:
                backend.Event("nobody-made-this")
            texts.append(str(missing.value))
            redis_servers.stop_server(port, password=PASSWORD)
            with pytest.raises(mpevent.BackendUnavailable) as down:
                event.is_set()
            texts.append(str(down.value))
        from mpevent.redis import _registry

        _registry.close_all()
    assert isinstance(down.value, ConnectionError)
    assert all(PASSWORD not in text for text in texts), texts
    assert f"127.0.0.1:{port}" in texts[0]


@pytest.mark.parametrize("size", [0, 400_000], ids=["small", "read-by-HMGET"])
def test_a_value_with_a_wrong_signature_is_refused_unread(
    server: int, tmp_path: Path, size: int
) -> None:
    url = f"redis://127.0.0.1:{server}/0"
    marker = tmp_path / "unpickled"
    with mpevent.connect(url, authkey="the-real-key") as writer:
        result = writer.AsyncResult("signed", create=True)
        result.set(_TouchesAFile(marker, size))
    with (
        mpevent.connect(url, authkey="an-attackers-key") as reader,
        pytest.raises(PermissionError, match="valid signature"),
    ):
        reader.AsyncResult("signed").get()
    assert not marker.exists()  # nothing was unpickled
    with mpevent.connect(url, authkey="the-real-key") as honest:
        honest.AsyncResult("signed").get()
    assert marker.exists()  # the same value does unpickle with the right key


def test_a_missing_authkey_is_a_clear_error(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPEVENT_AUTHKEY", raising=False)
    with pytest.raises(ValueError, match="MPEVENT_AUTHKEY"):
        mpevent.connect(f"redis://127.0.0.1:{server}/0")


def test_unknown_schemes_and_bad_options_are_refused(server: int) -> None:
    with pytest.raises(ValueError, match="knows local://"):
        mpevent.connect("mqtt://:pw@host/0")
    with pytest.raises(ValueError, match="ttl"):
        mpevent.connect(f"redis://127.0.0.1:{server}/0?ttl=never", authkey=AUTHKEY)


def test_objects_expire_only_when_unused_for_their_ttl(server: int) -> None:
    with mpevent.connect(f"redis://127.0.0.1:{server}/0?ttl=1", authkey=AUTHKEY) as backend:
        event = backend.Event()
        for _ in range(5):  # 1.5 s in all, each use refreshing the TTL
            time.sleep(0.3)
            event.set()
            event.clear()
        time.sleep(1.5)  # unused for longer than its TTL
        with pytest.raises(LookupError, match="expired"):
            event.is_set()


def test_a_handle_refreshes_the_ttl_only_when_a_quarter_of_it_has_passed(server: int) -> None:
    import redis

    client = redis.Redis(port=server)
    with mpevent.connect(f"redis://127.0.0.1:{server}/0?ttl=10", authkey=AUTHKEY) as backend:
        event = backend.Event()
        key = event._record.key
        created = client.pttl(key)
        assert 12_000 < created <= 12_500  # the TTL and the quarter that bounds a refresh
        # Let the clock visibly run down, then use the object: no refresh yet.
        deadline = time.monotonic() + 5
        while client.pttl(key) > created - 300 and time.monotonic() < deadline:
            time.sleep(0.05)  # expiry is the clock's work: nothing to wait on
        for _ in range(20):
            event.set()
            event.clear()
            assert not event.is_set()
        unrefreshed = client.pttl(key)
        assert unrefreshed < created - 250, "every call refreshed the TTL"
        event._record._refresh_due = 0.0  # as if a quarter of the TTL had passed
        event.set()
        assert client.pttl(key) > unrefreshed + 200, "a due refresh was not made"
        assert event.is_set()
    client.close()


def test_remove_name_deletes_the_object_for_everyone(server: int) -> None:
    """The one place Redis differs: the name is the object, with no references counted."""
    with mpevent.connect(f"redis://127.0.0.1:{server}/0", authkey=AUTHKEY) as backend:
        created = backend.Event("short-lived", create=True)
        opened = backend.Event.open("short-lived")
        created.remove_name()
        with pytest.raises(LookupError):
            opened.is_set()


def test_a_dead_server_fails_calls_after_a_bounded_retry(server: int) -> None:
    with mpevent.connect(f"redis://127.0.0.1:{server}/0", authkey=AUTHKEY) as backend:
        event = backend.Event()
        redis_servers.stop_server(server)
        begin = time.monotonic()
        with pytest.raises(mpevent.BackendUnavailable, match="cannot be reached"):
            event.set()
        assert time.monotonic() - begin < 10
        begin = time.monotonic()
        with pytest.raises(mpevent.BackendUnavailable):
            event.wait(1)
        assert time.monotonic() - begin < 15


def test_waiters_ride_out_a_server_restart(server: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{server}/0"
    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        event = backend.Event("survives", create=True)
        waiter, outcome = _parked_waiter(backend, event, 60)
        redis_servers.stop_server(server)
        redis_servers.start_server(tmp_path / "redis", server)  # same data directory (AOF)
        with mpevent.connect(url, authkey=AUTHKEY) as other:
            other.Event("survives").set()  # the object came back with the server
        waiter.join(60)
        assert outcome == [True]


def test_wait_without_timeout_warns_while_the_server_is_away(server: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{server}/0"
    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        event = backend.Event("patient", create=True)
        redis_servers.stop_server(server)
        timers = [
            threading.Timer(2.0, redis_servers.start_server, (tmp_path / "redis", server)),
            threading.Timer(4.0, lambda: backend.Event("patient").set()),
        ]
        for timer in timers:
            timer.start()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert event.wait() is True
        finally:
            for timer in timers:  # the setter may still be returning: not past the backend
                timer.join(30)
        assert any("keeps retrying" in str(warning.message) for warning in caught)


def test_the_command_line_drives_named_objects_on_redis(server: int) -> None:
    import os
    import subprocess
    import sys

    url = f"redis://127.0.0.1:{server}/0"
    env = {**os.environ, "MPEVENT_AUTHKEY": AUTHKEY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mpevent", *args, "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        backend.Event("from-the-shell", create=True)
        assert cli("wait", "from-the-shell", "--timeout", "0.1").returncode == 1
        assert cli("set", "from-the-shell").returncode == 0
        assert backend.Event("from-the-shell").is_set()
        assert cli("wait", "from-the-shell", "--timeout", "5").returncode == 0
        listed = cli("list")
        assert "from-the-shell: Event, set" in listed.stdout, listed.stderr
        result = backend.AsyncResult("result-from-the-shell", create=True)
        assert cli("wait", "result-from-the-shell", "--timeout", "0.1").returncode == 1
        result.set(7)
        assert cli("wait", "result-from-the-shell", "--timeout", "5").returncode == 0
        assert "result-from-the-shell: AsyncResult" in cli("list").stdout
        result.remove_name()
        assert cli("set", "nobody-made-this").returncode == 2
        assert "expire after" in cli("clean").stdout


def test_the_backends_example_runs_on_redis_by_configuration(server: int) -> None:
    import os
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "backends.py"
    env = {
        **os.environ,
        "MPEVENT_URL": f"redis://127.0.0.1:{server}/0",
        "MPEVENT_AUTHKEY": AUTHKEY,
    }
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "answer from another process: True" in done.stdout
    with mpevent.connect(env["MPEVENT_URL"], authkey=AUTHKEY) as backend:
        assert backend.names(), "the example's objects live on the server"


def test_waiters_and_callbacks_follow_an_object_to_another_cluster_node(tmp_path: Path) -> None:
    with redis_servers.cluster(tmp_path / "cluster") as ports:
        url = f"redis://127.0.0.1:{ports[0]}/0"
        with mpevent.connect(url, authkey=AUTHKEY) as backend:
            event = backend.Event("wanderer", create=True)
            slot = int(redis_servers._cli(ports[0], "cluster", "keyslot", "wanderer").stdout)
            source = redis_servers.slot_owner(ports, slot)
            target = next(port for port in ports if port != source)
            called = threading.Event()
            event.rawlink(lambda _: called.set())
            waiter, outcome = _parked_waiter(backend, event, 30, subscribed=2)
            redis_servers.move_slot(ports, slot, target)
            assert redis_servers.slot_owner(ports, slot) == target
            # Another host, connected to the new owner, sets it after the move.
            with mpevent.connect(f"redis://127.0.0.1:{target}/0", authkey=AUTHKEY) as other:
                other.Event("wanderer").set()
            waiter.join(30)
            assert outcome == [True]
            assert called.wait(10)
            # The object lives on at its new node, for everyone.
            event.clear()
            assert not event.is_set() and event.wait(0.05) is False


def test_closing_one_backend_leaves_the_waits_of_another_on_the_same_server(server: int) -> None:
    url = f"redis://127.0.0.1:{server}/0"
    with mpevent.connect(url, authkey=AUTHKEY) as staying:
        event = staying.Event("shared-listener", create=True)
        waiter, outcome = _parked_waiter(staying, event, 30)
        with mpevent.connect(url, authkey=AUTHKEY) as leaving:
            leaving.Event("shared-listener").clear()
        # The waiter was not woken by the close, and is still subscribed.
        assert waiter.is_alive()
        _until_subscribed(staying, event, 1)
        with mpevent.connect(url, authkey=AUTHKEY) as setter:
            setter.Event("shared-listener").set()
        waiter.join(30)
        assert outcome == [True]


def _blocked_get(result: Any) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []

    def reader() -> None:
        try:
            got.append(result.get(timeout=30))
        except BaseException as exc:  # the test asserts on it
            got.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    return thread, got


def _loads_counted(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scripts run through *backend* from now on: 'LOAD' for each load."""
    from mpevent.redis import _scripts

    names = {getattr(_scripts, name): name for name in ("LOAD", "STATE", "STORE", "SET")}
    run = backend.run
    ran: list[str] = []

    def counting(script: str, keys: list[str], args: list[Any]) -> Any:
        ran.append(names.get(script, "other"))
        return run(script, keys, args)

    monkeypatch.setattr(backend, "run", counting)
    return ran


def test_a_blocked_get_takes_a_small_value_from_the_message_that_woke_it(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"redis://127.0.0.1:{server}/0"
    with (
        mpevent.connect(url, authkey=AUTHKEY) as reader,
        mpevent.connect(url + "?ttl=600", authkey=AUTHKEY) as writer,
    ):
        result = reader.AsyncResult("carried", create=True)
        ran = _loads_counted(reader, monkeypatch)
        thread, got = _blocked_get(result)
        try:
            _until_subscribed(reader, result, 1)
            writer.AsyncResult("carried").set({"payload": b"x" * 100})
        finally:
            thread.join(30)
        assert not thread.is_alive()
        assert got == [{"payload": b"x" * 100}]
        # One LOAD found it empty before the wait; none after the wake.
        assert ran.count("LOAD") == 1, ran
        # Later reads go to the server as before (the object is cached).
        assert result.get() == {"payload": b"x" * 100}


def test_a_large_value_or_a_forged_message_is_read_from_the_server(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis as redis_py

    from mpevent.redis._values import CARRIED_MAX

    url = f"redis://127.0.0.1:{server}/0"
    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        big = backend.AsyncResult("big", create=True)
        ran = _loads_counted(backend, monkeypatch)
        thread, got = _blocked_get(big)
        try:
            _until_subscribed(backend, big, 1)
            with mpevent.connect(url, authkey=AUTHKEY) as writer:
                writer.AsyncResult("big").set(b"y" * (CARRIED_MAX + 1))
        finally:
            thread.join(30)
        assert got == [b"y" * (CARRIED_MAX + 1)]
        assert ran.count("LOAD") == 2, ran  # too large to travel in the message

        forged = backend.AsyncResult("forged", create=True)
        thread, got = _blocked_get(forged)
        try:
            _until_subscribed(backend, forged, 1)
            client = redis_py.Redis(port=server)
            # A message that claims generation 1 carries a value signed with
            # another key: not trusted, so the reader reads the server, which
            # holds nothing yet, and goes on waiting for the real set().
            frame = pickle.dumps("forged")
            client.execute_command("SPUBLISH", forged._record.channel, b"1 0 " + b"\0" * 32 + frame)
            backend.AsyncResult("forged").set("real")
        finally:
            thread.join(30)
        # Never the forged value: the real one, or (woken by the forgery
        # before the set) the Timeout that says it found nothing stored.
        assert got == ["real"] or isinstance(got[0], mpevent.Timeout), got


def test_a_wait_on_more_objects_than_an_inbox_keeps_stays_subscribed_to_all(server: int) -> None:
    from mpevent.redis import _inbox

    url = f"redis://127.0.0.1:{server}/0"
    with mpevent.connect(url, authkey=AUTHKEY) as backend:
        events = [backend.Event() for _ in range(_inbox.KEPT + 36)]
        woken: list[Any] = []
        waiter = threading.Thread(target=lambda: woken.extend(mpevent.wait(events, 30, count=1)))
        waiter.start()
        try:
            deadline = time.monotonic() + 20
            while _inbox.waiting() < len(events):
                assert time.monotonic() < deadline, "the wait never subscribed to all"
                time.sleep(0.01)  # subscribing has no event to wait on
            subscribed = {
                channel
                for inbox in list(_inbox._all)
                if not inbox.closed
                for channel in inbox.subscribed
            }
            assert {event._record.channel for event in events} <= subscribed
            events[0].set()  # the first subscribed: the oldest, were any evicted
        finally:
            waiter.join(30)
        assert not waiter.is_alive()
        assert woken == [events[0]]


def test_large_values_bypass_lua_and_stay_atomic(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from mpevent.redis import _record, _values

    client = redis.Redis(port=server)
    value = bytes(range(256)) * 2000  # 512 KB: a MULTI to store, an HMGET to read
    assert len(value) > _values.LOAD_INLINE_MAX
    try:
        with mpevent.connect(f"redis://127.0.0.1:{server}/0", authkey=AUTHKEY) as backend:
            result = backend.AsyncResult()
            client.config_resetstat()
            result.set(value)
            assert "cmdstat_exec" in client.info("commandstats")  # stored by a MULTI
            reader = pickle.loads(pickle.dumps(result))
            assert reader.get(timeout=5) == value
            # Stored again between LOAD and its HMGET: read whole through LOAD.
            again = pickle.loads(pickle.dumps(result))
            monkeypatch.setattr(_record.RedisRecord, "_read_large", lambda *args: None)
            assert again.get(timeout=5) == value
            monkeypatch.undo()
            # A large set() on an object that is gone leaves no key behind.
            gone = backend.AsyncResult()
            client.delete(gone._record.key)
            with pytest.raises(LookupError):
                gone.set(value)
            assert not client.exists(gone._record.key)
            assert client.dbsize() == 1  # the first result only
    finally:
        client.close()
