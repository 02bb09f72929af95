"""Redis topologies beyond one server: Sentinel and Cluster, through redis-py's own clients.

- standalone: `redis://`, `rediss://`, `unix://` (client.py, unchanged).
- Sentinel: `redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]`
  (`rediss+sentinel://` for TLS to the sentinels and the data nodes), or
  HEALTHFORMS_REDIS_SENTINELS + HEALTHFORMS_REDIS_SENTINEL_SERVICE. The userinfo is the
  data nodes' (as for standalone); the sentinels' own password is
  HEALTHFORMS_REDIS_SENTINEL_PASSWORD. redis-py's Sentinel finds the primary; every
  connection (the pool's and the pipelined one) asks again when it reconnects, so a
  failover is followed without a restart.
- Cluster: HEALTHFORMS_REDIS_CLUSTER=true with REDIS_URL as a seed node, or a comma list
  of node URLs. redis-py's RedisCluster routes by slot and follows MOVED/ASK; the hot
  path uses it too (see ClusterCommands).

Nothing here holds or prints a password: addresses are `host:port` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from healthforms.config import redis_topology_of
from healthforms.redis.multiplex import MultiplexCounters

STANDALONE, SENTINEL, CLUSTER = "standalone", "sentinel", "cluster"


def topology_of(url: str, *, cluster: bool = False) -> str:
    return redis_topology_of(url, cluster=cluster)


@dataclass(frozen=True, slots=True)
class SentinelSpec:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    tls: bool
    username: str | None
    password: str | None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None
    password: str | None


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"no host in {text!r}")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, number


def parse_sentinel_url(url: str) -> SentinelSpec:
    """`redis+sentinel://[user:pass@]h:p[,h:p...]/service[/db]`; ValueError names what is
    wrong, never quoting the password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("redis+sentinel", "rediss+sentinel"):
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(part, 26379) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError("a Sentinel URL names at least one sentinel host:port")
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise ValueError("a Sentinel URL names the service: redis+sentinel://h:p/<service>")
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError("the database after the service name must be a number") from None
    return SentinelSpec(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        tls=scheme.lower() == "rediss+sentinel",
        username=username,
        password=password,
    )


def parse_cluster_urls(value: str) -> ClusterSpec:
    """A seed `redis://…` or a comma list of node URLs (all TLS or none)."""
    urls = [urlsplit(part.strip()) for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("a cluster needs at least one node URL")
    schemes = {url.scheme.lower() for url in urls}
    if not schemes <= {"redis", "rediss"}:
        raise ValueError("cluster node URLs are redis:// or rediss:// (no unix sockets)")
    if len(schemes) > 1:
        raise ValueError("cluster node URLs must all be TLS (rediss://) or none")
    nodes = []
    for url in urls:
        if not url.hostname:
            raise ValueError("a cluster node URL needs a host")
        nodes.append((url.hostname, url.port or 6379))
        db = url.path.strip("/")
        if db not in ("", "0"):
            raise ValueError("Redis Cluster has only database 0")
    first = urls[0]
    return ClusterSpec(
        nodes=tuple(nodes),
        tls=schemes == {"rediss"},
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password is not None else None,
    )


# Node states for /health ----------------------------------------------------------------


@dataclass(slots=True)
class TopologyState:
    """What /health says about the deployment: never a secret."""

    topology: str
    primary: str | None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"topology": self.topology, "primary": self.primary, "nodes": self.nodes}


def _address(host: Any, port: Any) -> str:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _down(state: dict[str, Any]) -> bool:
    return bool(state.get("is_sdown") or state.get("is_odown") or state.get("is_disconnected"))


async def sentinel_state(sentinel: Any, service: str, timeout_s: float) -> TopologyState:
    """Ask the sentinels (first that answers) for the primary and its replicas, and say
    which sentinels answered."""
    nodes: list[dict[str, Any]] = []
    primary: str | None = None
    known = False
    for client in sentinel.sentinels:
        kwargs = client.connection_pool.connection_kwargs
        address = _address(kwargs.get("host", "?"), kwargs.get("port", "?"))
        try:
            async with asyncio.timeout(timeout_s):
                await client.ping()
                if not known:
                    master = await client.sentinel_master(service)
                    replicas = await client.sentinel_slaves(service)
        except Exception:  # noqa: BLE001 - a sentinel away or confused (TRANSPORT_ERRORS and more)
            nodes.append({"address": address, "role": "sentinel", "reachable": False})
            continue
        nodes.append({"address": address, "role": "sentinel", "reachable": True})
        if known:
            continue
        known = True
        primary = _address(master["ip"], master["port"])
        nodes.append({"address": primary, "role": "primary", "reachable": not _down(master)})
        for replica in replicas or []:
            nodes.append(
                {
                    "address": _address(replica["ip"], replica["port"]),
                    "role": "replica",
                    "reachable": not _down(replica),
                }
            )
    return TopologyState(SENTINEL, primary, nodes)


async def cluster_state(cluster: RedisCluster, timeout_s: float) -> TopologyState:
    """CLUSTER NODES as one node sees it: every node's role, reachability and slots."""
    nodes: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        reply = await cluster.cluster_nodes()
    for address, raw_info in sorted(reply.items()):
        info: dict[str, Any] = dict(raw_info)
        flags = str(info.get("flags", ""))
        role = "primary" if "master" in flags else "replica"
        down = "fail" in flags or "noaddr" in flags or not info.get("connected", True)
        slots = 0
        for start_end in info.get("slots") or []:
            if len(start_end) == 2:
                slots += int(start_end[1]) - int(start_end[0]) + 1
            elif len(start_end) == 1:
                slots += 1
        host, _, port = str(address).rpartition(":")
        entry: dict[str, Any] = {
            "address": _address(host, port),
            "role": role,
            "reachable": not down,
        }
        if role == "primary":
            entry["slots"] = slots
        nodes.append(entry)
    return TopologyState(CLUSTER, None, nodes)


class StateCache:
    """A topology state kept for about a second: /health under load must not hammer the
    sentinels or the cluster with CLUSTER NODES."""

    def __init__(self, fetch: Callable[[], Awaitable[TopologyState]], max_age_s: float = 1.0):
        self._fetch = fetch
        self._max_age = max_age_s
        self._cached: tuple[float, TopologyState] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> TopologyState:
        cached = self._cached
        if cached and time.monotonic() - cached[0] < self._max_age:
            return cached[1]
        async with self._lock:
            cached = self._cached
            if cached and time.monotonic() - cached[0] < self._max_age:
                return cached[1]
            state = await self._fetch()
            self._cached = (time.monotonic(), state)
            return state


# Cluster: the pool view and the hot path ------------------------------------------------


class ClusterPool:
    """The per-node pools of redis-py's RedisCluster, seen as one pool for /health and
    for the connection /health opens (a fresh one to a node that serves slots)."""

    def __init__(self, cluster: RedisCluster, max_connections: int) -> None:
        self.cluster = cluster
        self.max_connections = max_connections
        self.exhausted = 0  # MaxConnectionsError: a node's pool was full

    def _node(self) -> ClusterNode:
        node = self.cluster.get_default_node()
        if node is None:
            nodes = self.cluster.get_nodes()
            if not nodes:
                raise ConnectionRefusedError("no cluster node known")
            node = nodes[0]
        return node

    @property
    def connection_class(self) -> type:
        return self._node().connection_class

    @property
    def connection_kwargs(self) -> dict[str, Any]:
        node = self._node()
        return {**node.connection_kwargs, "host": node.host, "port": node.port}

    def stats(self, commands: int = 0) -> dict[str, int]:
        total = idle = 0
        for node in self.cluster.get_nodes():
            connections = getattr(node, "_connections", [])
            free = getattr(node, "_free", [])
            total += sum(1 for conn in connections if conn.is_connected)
            idle += sum(1 for conn in free if conn.is_connected)
        return {
            "hits": max(0, commands - total),
            "misses": total,
            "timeouts": self.exhausted,
            "total_connections": total,
            "idle_connections": idle,
            "stale_connections": 0,
        }

    async def disconnect(self, inuse_connections: bool = True) -> None:
        for node in self.cluster.get_nodes():
            await node.disconnect_free_connections()


class ClusterCommands:
    """What the hot path's pipelined connection offers (execute, evalsha, script_load),
    on RedisCluster: each command goes to the node that owns its key's slot, MOVED and
    ASK are followed by redis-py, and a lost node makes the client re-read the slots.

    Not batched like multiplex.Multiplexer: one command per pooled connection of the
    node. A command is never replayed after a transport error (the client's retry is
    off), so a nonce claim or a rate check runs at most once, as on one server."""

    def __init__(self, cluster: RedisCluster, deadline_s: float = 4.0) -> None:
        self._cluster = cluster
        self.counters = MultiplexCounters()
        self.max_in_flight = 0
        self.deadline_s = deadline_s

    @property
    def is_connected(self) -> bool:
        return any(
            conn.is_connected
            for node in self._cluster.get_nodes()
            for conn in getattr(node, "_connections", [])
        )

    def execute(self, *args: Any) -> Awaitable[Any]:
        self.counters.commands += 1
        return self._execute(args)

    async def _execute(self, args: tuple[Any, ...]) -> Any:
        try:
            # A bound on the whole command, re-reading the slot map included: seen in a
            # drill, a request waiting for ever on the client's re-initialisation after
            # a failover (cluster_deadline in client.py).
            async with asyncio.timeout(self.deadline_s):
                return await self._cluster.execute_command(*args)
        except RuntimeError as exc:
            # redis-py re-reading the slots closed the connection under this command
            # (see client.py RedisService._guarded): the server went away for it.
            raise RedisConnectionError(f"cluster connection closed: {exc}") from None

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> str:
        # SCRIPT LOAD goes to every primary (redis-py's routing of SCRIPT LOAD).
        sha = await self._cluster.script_load(source)
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    def stats(self) -> dict[str, int]:
        return {
            "connected": 1 if self.is_connected else 0,
            "in_flight": 0,
            "commands": self.counters.commands,
            "writes": self.counters.commands,
            "connects": 0,
            "dropped": 0,
            "timeouts": 0,
            "overloaded": 0,
        }

    async def close(self) -> None:
        return None
