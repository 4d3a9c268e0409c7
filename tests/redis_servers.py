"""Real Redis servers for the tests: one server, or a 3-master cluster, on free ports.

They are started daemonized (so they are not children of the test process,
which the leak checks watch) in temporary directories, and shut down at
the end of the module that asked for them.  A missing redis-server skips
the Redis tests, except where MPEVENT_REQUIRE_REDIS=1 (CI), where it fails.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require_redis() -> None:
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    message = "redis-server / redis-cli not installed (apt-get install redis-server)"
    if os.environ.get("MPEVENT_REQUIRE_REDIS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    # Cluster nodes also use port + 10000 for their bus: keep both free.
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 55000:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _cli(port: int, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    auth = ["-a", password, "--no-auth-warning"] if password else []
    return subprocess.run(
        ["redis-cli", "-p", str(port), *auth, *args], capture_output=True, text=True, timeout=30
    )


def start_server(directory: Path, port: int, *extra: str, password: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--daemonize", "yes", "--pidfile", str(directory / "redis.pid"), "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "always", *extra]
    if password:
        args += ["--requirepass", password]
    subprocess.run(args, check=True, timeout=30, capture_output=True)
    deadline = time.monotonic() + 15
    while _cli(port, "ping", password=password).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)


def stop_server(port: int, password: str | None = None) -> None:
    _cli(port, "shutdown", "nosave", password=password)
    deadline = time.monotonic() + 10
    while _cli(port, "ping", password=password).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def single_server(directory: Path, password: str | None = None) -> Iterator[int]:
    require_redis()
    port = free_port()
    start_server(directory, port, password=password)
    try:
        yield port
    finally:
        stop_server(port, password=password)


@contextmanager
def cluster(directory: Path, replicas: int = 0) -> Iterator[list[int]]:
    """A 3-master cluster, each master with *replicas* replicas; its ports."""
    require_redis()
    ports: list[int] = []
    try:
        for n in range(3 * (1 + replicas)):
            port = free_port()
            ports.append(port)
            start_server(
                directory / str(n),
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / str(n) / "nodes.conf"),
            )
        nodes = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        deadline = time.monotonic() + 30
        while "cluster_state:ok" not in _cli(ports[0], "cluster", "info").stdout or (
            sum(master != "-" for _, master in _node_ids(ports).values()) < 3 * replicas
            or sum(_synced(port) for port in ports) < 3 * replicas
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not become ready")
            time.sleep(0.1)
        yield ports
    finally:
        for port in ports:
            stop_server(port)


def _cli_at(where: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", *where, *args], capture_output=True, text=True, timeout=30)


def _start_at(directory: Path, where: list[str], *listen: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(directory), *listen]
    args += ["--daemonize", "yes", "--pidfile", str(directory / "redis.pid"), "--save", ""]
    subprocess.run(args, check=True, timeout=30, capture_output=True)
    deadline = time.monotonic() + 15
    while _cli_at(where, "ping").stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server ({' '.join(listen)}) did not start")
        time.sleep(0.05)


def _stop_at(where: list[str]) -> None:
    _cli_at(where, "shutdown", "nosave")
    deadline = time.monotonic() + 10
    while _cli_at(where, "ping").returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def unix_server(directory: Path) -> Iterator[Path]:
    """A server listening on a Unix socket only (no TCP port); yields the socket's path."""
    require_redis()
    socket_path = directory / "redis.sock"
    where = ["-s", str(socket_path)]
    _start_at(directory, where, "--port", "0", "--unixsocket", str(socket_path))
    try:
        yield socket_path
    finally:
        _stop_at(where)


@contextmanager
def tls_server(directory: Path) -> Iterator[tuple[int, Path]]:
    """A server speaking TLS only, with a fresh self-signed certificate for 127.0.0.1.

    Yields its port and the certificate, which clients trust as their CA.
    """
    require_redis()
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    request += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    made = subprocess.run(
        [*request, "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    where = ["--tls", "--cacert", str(cert), "-p", str(port)]
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
    tls += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    _start_at(directory, where, *tls)
    try:
        yield port, cert
    finally:
        _stop_at(where)


def slot_owner(ports: list[int], slot: int) -> int:
    """The port of the cluster node that serves *slot*."""
    for line in _cli(ports[0], "cluster", "nodes").stdout.splitlines():
        fields = line.split()
        for span in fields[8:]:
            if span.startswith("["):
                continue  # a slot being migrated, listed by its source
            low, _, high = span.partition("-")
            if int(low) <= slot <= int(high or low):
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
    raise LookupError(f"no node serves slot {slot}")


def move_slot(ports: list[int], slot: int, target: int) -> None:
    """Move *slot* and its keys to the node on port *target*, as resharding does."""
    source = slot_owner(ports, slot)
    ids = {}
    for line in _cli(ports[0], "cluster", "nodes").stdout.splitlines():
        fields = line.split()
        ids[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[0]
    steps = [
        (target, "cluster", "setslot", str(slot), "importing", ids[source]),
        (source, "cluster", "setslot", str(slot), "migrating", ids[target]),
    ]
    for port, *command in steps:
        assert _cli(port, *command).stdout.strip() == "OK"
    keys = _cli(source, "cluster", "getkeysinslot", str(slot), "1000").stdout.split()
    if keys:
        moved = _cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *keys)
        assert moved.stdout.strip() == "OK", moved.stdout + moved.stderr
    for port in [target, source, *(p for p in ports if p not in (source, target))]:
        told = _cli(port, "cluster", "setslot", str(slot), "node", ids[target])
        assert told.stdout.strip() == "OK", f"port {port}: {told.stdout}{told.stderr}"


def _synced(port: int) -> bool:
    """Whether the node on *port* is a replica done with its first sync."""
    info = _cli(port, "info", "replication").stdout
    return (
        "role:slave" in info
        and "master_link_status:up" in info
        and ("master_sync_in_progress:0" in info)
    )


def _node_ids(ports: list[int]) -> dict[int, tuple[str, str]]:
    """port -> (node id, id of its master or "-") from CLUSTER NODES."""
    nodes = {}
    for line in _cli(ports[0], "cluster", "nodes").stdout.splitlines():
        fields = line.split()
        nodes[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = (fields[0], fields[3])
    return nodes


def fail_over(ports: list[int], slot: int) -> int:
    """Promote a replica of *slot*'s master (CLUSTER FAILOVER: coordinated, no
    write lost); the port of the new master, once every node agrees.

    A manual failover gives up after five seconds when its election finds no
    quorum in time (seen on a loaded machine, under the sanitizers), and a
    master refuses a second vote for the same shard for a while: so the
    request is repeated until the slot moves, each try given fifteen seconds.
    """
    nodes = _node_ids(ports)
    master_id = nodes[slot_owner(ports, slot)][0]
    replica = next(port for port, (_, master) in nodes.items() if master == master_id)
    deadline = time.monotonic() + 60
    while not _synced(replica):  # a replica that lost its link cannot be promoted
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica on port {replica} is not in sync")
        time.sleep(0.1)
    while True:
        if "role:slave" in _cli(replica, "info", "replication").stdout:
            assert _cli(replica, "cluster", "failover").stdout.strip() == "OK"
        attempt = time.monotonic() + 15
        while any(slot_owner([port], slot) != replica for port in ports):
            if time.monotonic() > min(attempt, deadline):
                break
            time.sleep(0.1)
        else:
            return replica
        if time.monotonic() > deadline:
            raise RuntimeError(f"the failover of slot {slot} to port {replica} did not finish")


def forget_backends() -> None:
    """Close every Redis backend this process opened (their listeners, inboxes and pools).

    The one teardown of the Redis tests: each test starts with no backend,
    no warning given and no connection left from another.
    """
    from mpevent.redis import _connection, _registry

    _registry.close_all()
    _connection._warned.clear()  # each test's server is warned about afresh
    gc.collect()
