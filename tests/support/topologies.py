"""Private Sentinel sets and Redis Clusters of the leg's server binary, for the topology
tests and drills (valkey-server on leg A, redis-server on leg B). Nothing shared is
touched: every process listens on 127.0.0.1 on ports of its own and dies with us."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis

from healthforms.redis.embedded import EmbeddedRedis, _die_with_parent
from tests.support import legs

SERVICE = "hfdrill"
# Quick failover: a primary is down after 1 s, and a failover may restart after 3 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_NODE_TIMEOUT_MS = 1000


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def command(client: sync_redis.Redis, *args: object) -> Any:
    """One raw command (redis-py's execute_command is untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (sync_redis.RedisError, OSError):
            pass
        time.sleep(interval_s)
    return False


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a certificate for 127.0.0.1/localhost (tests/redis/test_client.py makes
    them): every server of a TLS set uses it."""

    ca: Path
    cert: Path
    key: Path

    def conf_lines(self) -> list[str]:
        return [
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",
        ]

    def args(self) -> list[str]:
        return [
            arg
            for line in [*self.conf_lines(), "tls-replication yes"]
            for arg in (f"--{line.split(' ', 1)[0]}", line.split(" ", 1)[1])
        ]


def _client(port: int, tls: TlsFiles | None = None) -> sync_redis.Redis:
    if tls is None:
        return sync_redis.Redis(port=port, socket_timeout=1.0)
    return sync_redis.Redis(
        port=port, socket_timeout=1.0, ssl=True, ssl_ca_certs=str(tls.ca), ssl_cert_reqs="required"
    )


@dataclass
class SentinelProcess:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sentinel(
    folder: Path, binary: str, primary_port: int, tls: TlsFiles | None = None
) -> SentinelProcess:
    folder.mkdir(parents=True, exist_ok=True)
    port = cluster_port()
    conf = folder / "sentinel.conf"
    listen = [f"port {port}"]
    if tls is not None:
        # TLS for clients and for the sentinel's own links to the data nodes.
        listen = ["port 0", f"tls-port {port}", *tls.conf_lines(), "tls-replication yes"]
    conf.write_text(
        "\n".join(
            [
                *listen,
                "bind 127.0.0.1",
                f"dir {folder}",
                f"logfile {folder / 'sentinel.log'}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 2",
                "",
            ]
        )
    )
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [binary, str(conf), "--sentinel"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509
        cwd=str(folder),
    )
    sentinel = SentinelProcess(process, port, folder)
    if not wait_until(lambda: _client(port, tls).ping(), 10):
        sentinel.stop()
        raise RuntimeError(f"sentinel did not start: {(folder / 'sentinel.log').read_text()}")
    return sentinel


@dataclass
class SentinelSet:
    """1 primary, 2 replicas, 3 sentinels (quorum 2)."""

    servers: list[EmbeddedRedis]
    sentinels: list[SentinelProcess]
    binary: str
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        for sentinel in self.sentinels:
            try:
                client = _client(sentinel.port, self.tls)
                address: Any = client.sentinel_get_master_addr_by_name(SERVICE)
                return int(address[1])
            except (sync_redis.RedisError, OSError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def client_on(self, port: int) -> sync_redis.Redis:
        return _client(port, self.tls)

    def server_on(self, port: int) -> EmbeddedRedis:
        return next(server for server in self.servers if server.port == port)

    def all_see_replicas(self, count: int) -> bool:
        client = _client(self.sentinels[0].port, self.tls)
        replicas = client.sentinel_slaves(SERVICE)
        up = [r for r in replicas if not r.get("is_sdown") and not r.get("is_odown")]
        return len(up) >= count

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()


@contextmanager
def sentinel_set(folder: Path, tls: TlsFiles | None = None) -> Iterator[SentinelSet]:
    binary = legs.private_server_binary()
    servers: list[EmbeddedRedis] = []
    sentinels: list[SentinelProcess] = []
    running = SentinelSet(servers, sentinels, binary, tls)
    tls_args = tls.args() if tls is not None else []
    try:
        primary = EmbeddedRedis.start(
            folder / "primary",
            binary=binary,
            port=cluster_port(),
            appendonly=False,
            tls=tls is not None,
            extra_args=tls_args,
        )
        servers.append(primary)
        for index in range(2):
            servers.append(
                EmbeddedRedis.start(
                    folder / f"replica{index}",
                    binary=binary,
                    port=cluster_port(),
                    appendonly=False,
                    tls=tls is not None,
                    extra_args=[*tls_args, "--replicaof", "127.0.0.1", str(primary.port)],
                )
            )
        for index in range(3):
            assert primary.port is not None
            sentinels.append(start_sentinel(folder / f"sentinel{index}", binary, primary.port, tls))
        if not wait_until(lambda: running.all_see_replicas(2), 15):
            raise RuntimeError("the sentinels did not find both replicas")
        yield running
    finally:
        running.stop()


@dataclass
class ClusterSet:
    """3 primaries, 3 replicas, cluster-node-timeout 1 s."""

    nodes: list[EmbeddedRedis] = field(default_factory=list)
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return ",".join(f"{scheme}://127.0.0.1:{node.port}" for node in self.nodes[:3])

    def client(self, node: EmbeddedRedis) -> sync_redis.Redis:
        assert node.port is not None
        return _client(node.port, self.tls)

    def alive(self) -> list[EmbeddedRedis]:
        return [node for node in self.nodes if node.is_running]

    def state_ok(self) -> bool:
        for node in self.alive():
            info = self.client(node).cluster("INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text and not (
                isinstance(info, dict) and info.get("cluster_state") == "ok"
            ):
                return False
        return True

    def owner_of(self, slot: int) -> EmbeddedRedis:
        """The live primary serving `slot`, as a live node sees it."""
        for node in self.alive():
            try:
                slots = command(self.client(node), "CLUSTER", "SLOTS")
            except (sync_redis.RedisError, OSError):
                continue
            for start, end, primary, *_ in slots:
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def node_id(self, node: EmbeddedRedis) -> str:
        reply = command(self.client(node), "CLUSTER", "MYID")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextmanager
def cluster_set(folder: Path, tls: TlsFiles | None = None) -> Iterator[ClusterSet]:
    binary = legs.private_server_binary()
    running = ClusterSet(tls=tls)
    tls_args = [*tls.args(), "--tls-cluster", "yes"] if tls is not None else []
    try:
        for index in range(6):
            node_dir = folder / f"node{index}"
            port = cluster_port()
            # The bus port is the port + 10000; with TLS (port 0) it must be said.
            bus = ["--cluster-port", str(port + 10000)] if tls is not None else []
            running.nodes.append(
                EmbeddedRedis.start(
                    node_dir,
                    binary=binary,
                    port=port,
                    appendonly=False,
                    tls=tls is not None,
                    extra_args=[
                        *tls_args,
                        *bus,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir.resolve() / "nodes.conf"),
                        "--cluster-node-timeout",
                        str(CLUSTER_NODE_TIMEOUT_MS),
                        # A replica with stale data may still be promoted (drills only).
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )  # fmt: skip
            )
        primaries, replicas = running.nodes[:3], running.nodes[3:]
        ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
        for node, (start, end) in zip(primaries, ranges, strict=True):
            command(running.client(node), "CLUSTER", "ADDSLOTSRANGE", start, end)
        first = running.client(primaries[0])
        for node in running.nodes[1:]:
            command(first, "CLUSTER", "MEET", "127.0.0.1", node.port)

        def everyone_known() -> bool:
            for node in running.nodes:
                nodes = command(running.client(node), "CLUSTER", "NODES")
                text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
                if len([line for line in text.splitlines() if line.strip()]) < 6:
                    return False
                if "handshake" in text:
                    return False
            return True

        if not wait_until(everyone_known, 15):
            raise RuntimeError("cluster nodes did not meet")
        for replica, primary in zip(replicas, primaries, strict=True):
            command(running.client(replica), "CLUSTER", "REPLICATE", running.node_id(primary))
        if not wait_until(running.state_ok, 20):
            raise RuntimeError("the cluster did not reach cluster_state:ok")

        def replicas_synced() -> bool:
            for replica in replicas:
                info = running.client(replica).info("replication")
                if info.get("master_link_status") != "up":
                    return False
            return True

        if not wait_until(replicas_synced, 20):
            raise RuntimeError("the cluster replicas did not sync")
        yield running
    finally:
        running.stop()
