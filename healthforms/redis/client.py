"""The Redis client every feature shares: bounded blocking pool, short timeouts, circuit breaker.

Design notes (DESIGN.md "When Redis is unavailable"):
- The asyncio ConnectionPool raises "Too many connections" when exhausted; our
  bounded pool with a short wait timeout queues instead.
- redis-py's own retries are switched off. A failed call opens the breaker so the
  next calls fail fast (no request waits on a dead server), and a background probe
  closes it again when Redis answers. Only idempotent calls are retried, once, and
  only while the breaker is closed: a nonce claim or a rate check is never replayed.
- TLS (`rediss://`) always verifies the certificate chain and the host name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, MaxConnectionsError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from healthforms.config import Settings
from healthforms.redis.errors import TRANSPORT_ERRORS, PoolExhausted, RedisUnavailable
from healthforms.redis.multiplex import Multiplexer, spec_from_pool
from healthforms.redis.scripts import ArgT, KeyT, LuaScript
from healthforms.redis.topology import (
    CLUSTER,
    SENTINEL,
    STANDALONE,
    ClusterCommands,
    ClusterPool,
    StateCache,
    TopologyState,
    cluster_state,
    parse_cluster_urls,
    parse_sentinel_url,
    sentinel_state,
    topology_of,
)

log = structlog.get_logger("healthforms.redis")

T = TypeVar("T")


@dataclass(slots=True)
class PoolCounters:
    hits: int = 0
    misses: int = 0
    timeouts: int = 0
    stale: int = 0


def _closed_by_server(connection: Any) -> bool:
    reader = getattr(connection, "_reader", None)
    return reader is not None and reader.at_eof()


class CountingBlockingPool(ConnectionPool):
    """A bounded connection pool that queues callers, and keeps the figures /health reports.

    At most `max_connections` connections; a caller that finds none free waits in line
    (first come, first served) up to `timeout` seconds, then gets PoolExhausted.
    redis-py's BlockingConnectionPool does the same with a Condition, a timeout
    context and several awaits per command even when a connection is idle; this
    pool takes an idle connection without suspending, which is most of the client
    cost of a one-round-trip request (see bench/ratelimit.py).

    hits: a request got an idle, connected connection; misses: a connection had to be
    made (new, or a stale one reconnected); timeouts: no connection became free in time;
    stale: a pooled connection was found disconnected (dropped after an error or a
    server restart) and had to reconnect.
    """

    def __init__(self, *, timeout: float | None = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.counters = PoolCounters()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _has_room(self) -> bool:
        return bool(self._available_connections) or (
            len(self._in_use_connections) < self.max_connections
        )

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        connection._hf_fresh = True
        return connection

    async def ensure_connection(self, connection: Any) -> None:
        # Runs once per acquisition, right after the pool handed `connection` out.
        if getattr(connection, "_hf_fresh", False):
            connection._hf_fresh = False
            self.counters.misses += 1
        elif connection.is_connected and not _closed_by_server(connection):
            self.counters.hits += 1
        else:
            # Dropped after an error or a server restart: it must reconnect.
            self.counters.stale += 1
            self.counters.misses += 1
            if connection.is_connected:
                # The server closed it while it sat idle (restart, failover, idle
                # timeout). redis-py's own check misses this with hiredis; sending on it
                # would fail a command that must not be retried (a nonce claim).
                await connection.disconnect()
        await super().ensure_connection(connection)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._waiters or not self._has_room():
            await self._wait_for_room()
        try:
            connection = self._available_connections.pop()
        except IndexError:
            connection = self.make_connection()
        self._in_use_connections.add(connection)
        try:
            # Counts, and reconnects a connection that was dropped or left dirty.
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        first = True
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            # Keep our place in line when woken but overtaken: retry at the front.
            if first:
                self._waiters.append(waiter)
            else:
                self._waiters.appendleft(waiter)
            first = False
            try:
                # asyncio.timeout, not wait_for: wait_for (3.11) swallows a cancellation
                # that arrives just after the wake-up.
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                # Timed out or cancelled just after being woken: hand the free connection on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()
                if isinstance(exc, TimeoutError):
                    self.counters.timeouts += 1
                    raise PoolExhausted("redis pool exhausted") from None
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if self._has_room():
                return

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: Any) -> None:
        self._in_use_connections.discard(connection)
        if connection.should_reconnect():
            await connection.disconnect()
        self._available_connections.append(connection)
        self._wake_next()

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        self._wake_next()

    def stats(self) -> dict[str, int]:
        # Dropped connection objects stay in the idle list until reused; they are not
        # connections to the server, so they are not counted.
        idle = sum(1 for conn in self._available_connections if conn.is_connected)
        in_use = len(self._in_use_connections)
        return {
            "hits": self.counters.hits,
            "misses": self.counters.misses,
            "timeouts": self.counters.timeouts,
            "total_connections": idle + in_use,
            "idle_connections": idle,
            "stale_connections": self.counters.stale,
        }


class CountingSentinelPool(CountingBlockingPool, SentinelConnectionPool):
    """The counting pool over Sentinel-managed connections: each connection asks the
    sentinels for the current primary when it (re)connects, and a READONLY reply (the
    server it talks to was demoted) drops it, so a failover is followed by itself."""


class CircuitBreaker:
    """Open after a transport failure; stay open for a back-off that doubles up to a cap."""

    def __init__(self, *, base_backoff_s: float = 0.25, max_backoff_s: float = 5.0) -> None:
        self._base = base_backoff_s
        self._max = max_backoff_s
        self._backoff = base_backoff_s
        self.open_until = 0.0
        self.is_open = False
        self.last_error = ""
        self.opened_count = 0

    def allows_call(self) -> bool:
        if not self.is_open:
            return True
        # Half-open: after the back-off, one caller may try; others keep failing fast.
        now = time.monotonic()
        if now >= self.open_until:
            self.open_until = now + self._backoff
            return True
        return False

    def record_failure(self, error: BaseException) -> None:
        if not self.is_open:
            self.opened_count += 1
            log.warning("redis_unavailable", error_type=type(error).__name__)
        self.is_open = True
        self.last_error = _short_reason(error)
        self.open_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max)

    def record_success(self) -> None:
        if self.is_open:
            log.info("redis_recovered")
        self.is_open = False
        self._backoff = self._base
        self.last_error = ""


def _short_reason(error: BaseException) -> str:
    text = str(error).split("\n", 1)[0]
    # Never echo a URL (it may carry a password) into /health.
    if "://" in text:
        text = type(error).__name__
    return (text or type(error).__name__)[:120]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What /health and `healthforms check` may say about the server: no secrets."""

    url: str  # password removed
    tls: bool
    embedded: bool
    topology: str = STANDALONE


_QUERY_PASSWORD_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_USERINFO_PASSWORD_RE = re.compile(r"(://[^:/@,]*):[^@/]*@")


def redact_url(url: str) -> str:
    """The URL without its password (userinfo or a `?password=` query argument)."""
    url = _QUERY_PASSWORD_RE.sub(r"\1***", url)
    if "," in url or "+sentinel://" in url:
        # Several hosts (Sentinel) or several URLs (Cluster): urlsplit cannot parse the
        # port, so blank each userinfo's password by pattern.
        return _USERINFO_PASSWORD_RE.sub(r"\1:***@", url)
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return parts._replace(netloc=user + host).geturl()


def build_pool(
    url: str,
    *,
    password: str | None = None,
    username: str | None = None,
    ca_file: Path | None = None,
    max_connections: int = 32,
    timeout_s: float = 0.5,
    pool_wait_s: float = 0.5,
) -> CountingBlockingPool:
    """Build the pool for `url` (redis://, rediss://, unix://) with our safety settings."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": "healthforms",
    }
    if password is not None:
        kwargs["password"] = password
    if username is not None:
        kwargs["username"] = username
    scheme = urlsplit(url).scheme
    if scheme == "rediss":
        # Server-authentication TLS: verify the chain against the CA and the host name.
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        kwargs["ssl_check_hostname"] = True
        if ca_file is not None:
            kwargs["ssl_ca_certs"] = str(ca_file)
    pool = CountingBlockingPool.from_url(
        url, max_connections=max_connections, timeout=pool_wait_s, **kwargs
    )
    assert isinstance(pool, CountingBlockingPool)
    if scheme == "rediss":
        assert issubclass(pool.connection_class, SSLConnection)
    return pool


class RedisService:
    """The shared Redis handle: a client on the counting pool plus the circuit breaker.

    Standalone and Sentinel: `pool` is the counting pool (Sentinel: over connections
    that follow the primary) and `mux` the pipelined connection. Cluster: `client` is
    redis-py's RedisCluster, `pool` a view of its per-node pools and `mux` runs the
    hot path's commands on it (topology.ClusterCommands)."""

    def __init__(
        self,
        pool: CountingBlockingPool | ClusterPool,
        target: RedisTarget,
        prefix: str = "",
        *,
        sentinel: Sentinel | None = None,
        service_name: str = "",
        cluster: RedisCluster | None = None,
    ) -> None:
        self.pool = pool
        self.sentinel = sentinel
        self.service_name = service_name
        self.cluster = cluster
        self.cluster_kwargs: dict[str, Any] = {}
        # Cluster: one call, slot-map refresh included, never takes longer than this.
        self.cluster_deadline_s = 4.0
        self.mux: Multiplexer | ClusterCommands
        if cluster is not None:
            # Typed as Redis for the callers' lambdas: RedisCluster has the same
            # command methods (routed by key slot).
            self.client = cast(Redis, cluster)
            self.mux = ClusterCommands(cluster, self.cluster_deadline_s)
        else:
            assert isinstance(pool, CountingBlockingPool)
            self.client = Redis(connection_pool=pool, decode_responses=False)
            timeout = float(pool.connection_kwargs.get("socket_timeout") or 0.5)
            resolve = None
            if isinstance(pool, CountingSentinelPool):
                sentinel_pool = pool

                async def resolve() -> tuple[str, int]:
                    host, port = await sentinel_pool.get_master_address()  # type: ignore[no-untyped-call]
                    return str(host), int(port)

            # Lua scripts (every one-round-trip operation) share one pipelined connection.
            self.mux = Multiplexer(
                spec_from_pool(pool.connection_class, pool.connection_kwargs, timeout, resolve),
                timeout_s=timeout,
            )
        self.target = target
        self.prefix = prefix
        self.breaker = CircuitBreaker()
        self._probe_task: asyncio.Task[None] | None = None
        self._info_cache: tuple[float, dict[str, Any]] | None = None
        self._info_lock = asyncio.Lock()
        self._state = StateCache(self._fetch_state)

    @property
    def topology(self) -> str:
        return self.target.topology

    @property
    def available(self) -> bool:
        return not self.breaker.is_open

    def key(self, template: str) -> str:
        """Prefix a key (templates keep their literal `{…}` Cluster hash tags)."""
        return self.prefix + template

    def dedicated_client(self, *, socket_timeout: float | None = None) -> Redis:
        """A client on a connection of its own, set up like the pool's (TLS, ACL user,
        timeouts), for a long-lived subscription or a blocking read (give it a
        `socket_timeout` longer than the block): never counted in the pool's figures,
        never holding one of its connections. The caller closes it (`aclose`).
        Cluster: a RedisCluster of its own (it routes by slot, e.g. a stream read)."""
        if self.cluster is not None:
            if socket_timeout is None:
                # A subscription: classic PUBLISH reaches every node of a cluster, so a
                # plain connection to one live primary hears everything (redis-py's
                # ClusterPubSub is not used).
                return _one_node_client(self.cluster, self.cluster_kwargs)
            return cast(Redis, _cluster_copy(self.cluster, self.cluster_kwargs, socket_timeout))
        assert isinstance(self.pool, CountingBlockingPool)
        kwargs = dict(self.pool.connection_kwargs)
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        pool = ConnectionPool(
            connection_class=self.pool.connection_class,
            max_connections=1,
            **kwargs,
        )
        return Redis.from_pool(pool)  # closing the client closes its pool

    async def call(self, fn: Callable[[Redis], Awaitable[T]], *, idempotent: bool = False) -> T:
        """Run one Redis operation through the breaker; raise RedisUnavailable to degrade."""
        return await self._guarded(fn, self.client, idempotent)

    async def script(
        self,
        script: LuaScript,
        keys: Sequence[KeyT] = (),
        args: Sequence[ArgT] = (),
        *,
        idempotent: bool = False,
    ) -> Any:
        """Run a Lua script on the shared pipelined connection, through the breaker."""
        return await self._guarded(lambda m: script(m, keys, args), self.mux, idempotent)

    async def pipelined(
        self, fn: Callable[[Multiplexer], Awaitable[T]], *, idempotent: bool = False
    ) -> T:
        """Like call(), on the shared pipelined connection (single request/reply commands)."""
        return await self._guarded(fn, self.mux, idempotent)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: ArgT) -> Awaitable[Any]:
        """EVALSHA on the pipelined connection with no coroutine of its own, never replayed.

        For the rate check every request makes: at 50 in flight the floor is ~5 µs per
        command, so each wrapper layer shows (bench/ratelimit.py). Raises
        RedisUnavailable while the breaker is open. The awaitable raises redis-py's
        errors as they come: the caller hands a transport error (TRANSPORT_ERRORS) to
        failed() and calls succeeded() after a reply, so the breaker hears of both.
        """
        if self.breaker.is_open:
            self._gate()
        return self.mux.execute("EVALSHA", sha, numkeys, *keys_and_args)

    def succeeded(self) -> None:
        """A call went through: close the breaker if this was its half-open trial."""
        if self.breaker.is_open:
            self.breaker.record_success()

    def failed(self, exc: BaseException) -> RedisUnavailable:
        """A call failed in transport: open the breaker; the error to raise or degrade on."""
        if self.cluster is not None and _slot_busy(exc):
            # One slot is being migrated (TRYAGAIN until all its keys have moved, then
            # redis-py's redirect budget ran out): this call degrades, the rest of the
            # cluster is fine, so the breaker stays closed.
            return RedisUnavailable("cluster slot busy (migration)")
        self.breaker.record_failure(exc)
        return RedisUnavailable(self.breaker.last_error)

    def _gate(self) -> None:
        """While the breaker is open, fail fast (but let one caller try after the back-off)."""
        if self.breaker.is_open and not self.breaker.allows_call():
            raise RedisUnavailable(self.breaker.last_error or "redis unavailable")

    async def _guarded(self, fn: Callable[[Any], Awaitable[T]], client: Any, idempotent: bool) -> T:
        # Written for the hot path: every authenticated request passes here.
        if self.breaker.is_open:
            self._gate()
        try:
            if self.cluster is not None:
                async with asyncio.timeout(self.cluster_deadline_s):
                    result = await fn(client)
            else:
                result = await fn(client)
        except PoolExhausted:
            raise
        except MaxConnectionsError:
            # Cluster: a node's pool is full (redis-py refuses at once, no queue).
            if isinstance(self.pool, ClusterPool):
                self.pool.exhausted += 1
            raise PoolExhausted("redis pool exhausted") from None
        except RuntimeError as exc:
            # Cluster: redis-py re-reading the slots after a failover closes connections
            # other requests are reading from ("read() called while another coroutine
            # is already waiting"): for them the server went away.
            if self.cluster is None:
                raise
            raise self.failed(exc) from exc
        except TRANSPORT_ERRORS as exc:
            # Retry only a dropped connection (e.g. a pooled one the server closed
            # on restart): a timeout means a hung server, and a second wait would
            # double the time every request spends during an outage.
            retryable = isinstance(exc, RedisConnectionError | ConnectionError) and not (
                isinstance(exc, RedisTimeoutError | TimeoutError)
            )
            if idempotent and retryable and not self.breaker.is_open:
                return await self._retry_once(fn, client)
            raise self.failed(exc) from exc
        self.succeeded()
        return result

    async def _retry_once(self, fn: Callable[[Any], Awaitable[T]], client: Any) -> T:
        """The single retry of an idempotent call, after a short pause."""
        await asyncio.sleep(0.01)
        try:
            result = await fn(client)
        except PoolExhausted:
            raise
        except MaxConnectionsError:
            raise PoolExhausted("redis pool exhausted") from None
        except TRANSPORT_ERRORS as exc:
            raise self.failed(exc) from exc
        self.succeeded()
        return result

    async def ping(self) -> bool:
        try:
            await self.call(lambda r: r.ping(), idempotent=True)
        except RedisUnavailable:
            return False
        return True

    async def info(self, max_age_s: float = 1.0) -> dict[str, Any]:
        """INFO (all sections), cached for about a second so /health cannot hammer Redis."""
        now = time.monotonic()
        cached = self._info_cache
        if cached and now - cached[0] < max_age_s:
            return cached[1]
        async with self._info_lock:
            cached = self._info_cache
            if cached and time.monotonic() - cached[0] < max_age_s:
                return cached[1]
            if self.cluster is not None:
                info = await self.call(lambda r: _cluster_info(self.cluster), idempotent=True)
            else:
                info = await self.call(lambda r: r.info("all"), idempotent=True)
            self._info_cache = (time.monotonic(), info)
            return info

    async def probe_forever(self, interval_s: float = 0.5) -> None:
        """Reconnect in the background: close the breaker as soon as Redis answers again."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.breaker.is_open:
                continue
            try:
                await asyncio.wait_for(self.client.ping(), timeout=1.0)
            except TRANSPORT_ERRORS as exc:
                self.breaker.record_failure(exc)
                with contextlib.suppress(Exception):
                    await self.pool.disconnect(inuse_connections=False)
            except ResponseError:
                # NOAUTH / LOADING and friends: the server is up but not usable yet.
                continue
            except Exception as exc:  # noqa: BLE001 - the probe must outlive any failure
                # e.g. PoolExhausted: keep the breaker open and try again next round.
                log.warning("redis_probe_failed", error_type=type(exc).__name__)
                continue
            else:
                self.breaker.record_success()

    def start_probe(self) -> None:
        if self._probe_task is None:
            self._probe_task = asyncio.create_task(self.probe_forever(), name="redis-probe")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        await self.mux.close()
        await self.client.aclose()
        await self.pool.disconnect()
        if self.sentinel is not None:
            with contextlib.suppress(Exception):
                await self.sentinel.aclose()

    async def topology_state(self, reachable: bool) -> dict[str, Any]:
        """`topology`, `primary` and `nodes` (role, reachable) for /health; cached about a
        second. `reachable`: whether the service reaches its (standalone) server."""
        if self.sentinel is None and self.cluster is None:
            address = _standalone_address(self.pool.connection_kwargs)
            return TopologyState(
                STANDALONE,
                address,
                [{"address": address, "role": "primary", "reachable": reachable}],
            ).as_dict()
        try:
            state = await self._state.get()
        except Exception as exc:  # noqa: BLE001 - /health must answer (TRANSPORT_ERRORS and more)
            log.warning("redis_topology_unknown", error_type=type(exc).__name__)
            return TopologyState(self.topology, None, []).as_dict()
        return state.as_dict()

    async def _fetch_state(self) -> TopologyState:
        if self.cluster is not None:
            return await cluster_state(self.cluster, timeout_s=0.8)
        assert self.sentinel is not None
        return await sentinel_state(self.sentinel, self.service_name, timeout_s=0.4)

    def pool_stats(self) -> dict[str, int]:
        """The pool's figures for /health, the pipelined connection counted in."""
        if isinstance(self.pool, ClusterPool):
            return self.pool.stats(self.mux.counters.commands)
        stats = self.pool.stats()
        mux = self.mux.counters
        connected = 1 if self.mux.is_connected else 0
        stats["hits"] += max(0, mux.commands - mux.connects)
        stats["misses"] += mux.connects
        stats["timeouts"] += mux.overloaded
        stats["total_connections"] += connected
        stats["stale_connections"] += mux.dropped + mux.timeouts
        return stats


def build_redis(settings: Settings, url: str, *, embedded: bool) -> RedisService:
    """The app's Redis service for `url`, with the pool settings of `settings`: standalone,
    Sentinel (redis+sentinel://) or Cluster (HEALTHFORMS_REDIS_CLUSTER or a URL list)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    topology = topology_of(url, cluster=settings.redis_cluster)
    if topology == SENTINEL:
        return _build_sentinel(settings, url, password)
    if topology == CLUSTER:
        return _build_cluster(settings, url, password)
    pool = build_pool(
        url,
        password=password,
        username=settings.redis_username,
        ca_file=settings.redis_ca_file,
        max_connections=settings.redis_pool_size,
        timeout_s=settings.redis_timeout_s,
    )
    target = RedisTarget(url=redact_url(url), tls=url.startswith("rediss://"), embedded=embedded)
    return RedisService(pool, target, prefix=settings.redis_prefix)


def _connection_kwargs(settings: Settings, *, tls: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": "healthforms",
    }
    if tls:
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        kwargs["ssl_check_hostname"] = True
        if settings.redis_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.redis_ca_file)
    return kwargs


def _build_sentinel(settings: Settings, url: str, password: str | None) -> RedisService:
    spec = parse_sentinel_url(url)
    data_password = spec.password if spec.password is not None else password
    data_username = spec.username or settings.redis_username
    sentinel_kwargs = _connection_kwargs(settings, tls=spec.tls)
    sentinel_kwargs.pop("client_name")
    if settings.redis_sentinel_password is not None:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_sentinel_username:
        sentinel_kwargs["username"] = settings.redis_sentinel_username
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    kwargs = _connection_kwargs(settings, tls=spec.tls)
    if data_password is not None:
        kwargs["password"] = data_password
    if data_username:
        kwargs["username"] = data_username
    if spec.db:
        kwargs["db"] = spec.db
    pool = CountingSentinelPool(
        service_name=spec.service,
        sentinel_manager=sentinel,
        max_connections=settings.redis_pool_size,
        timeout=0.5,
        **kwargs,
    )
    target = RedisTarget(url=redact_url(url), tls=spec.tls, embedded=False, topology=SENTINEL)
    return RedisService(
        pool, target, prefix=settings.redis_prefix, sentinel=sentinel, service_name=spec.service
    )


def _build_cluster(settings: Settings, url: str, password: str | None) -> RedisService:
    spec = parse_cluster_urls(url)
    kwargs = _connection_kwargs(settings, tls=spec.tls)
    node_password = spec.password if spec.password is not None else password
    if node_password is not None:
        kwargs["password"] = node_password
    username = spec.username or settings.redis_username
    if username:
        kwargs["username"] = username
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in spec.nodes],
        max_connections=settings.redis_pool_size,
        decode_responses=False,
        # Every 5th MOVED, redis-py would close every connection of every node, also
        # those other requests are reading from (they fail with RuntimeError): patch
        # the slot cache from each MOVED instead (a lost node still re-reads it all).
        reinitialize_steps=0,
        **kwargs,
    )
    target = RedisTarget(url=redact_url(url), tls=spec.tls, embedded=False, topology=CLUSTER)
    pool = ClusterPool(cluster, settings.redis_pool_size)
    service = RedisService(pool, target, prefix=settings.redis_prefix, cluster=cluster)
    # What a dedicated client (a stream read, a subscription) is built with.
    service.cluster_kwargs = {**kwargs, "decode_responses": False, "reinitialize_steps": 0}
    return service


def _cluster_copy(
    cluster: RedisCluster, settings: dict[str, Any], socket_timeout: float | None
) -> RedisCluster:
    """A RedisCluster with the same nodes and `settings` (TLS, credentials), on
    connections of its own."""
    kwargs = dict(settings)
    if socket_timeout is not None:
        kwargs["socket_timeout"] = socket_timeout
    known = [ClusterNode(n.host, n.port) for n in cluster.get_nodes()] or [
        ClusterNode(n.host, n.port) for n in cluster.nodes_manager.startup_nodes.values()
    ]
    return RedisCluster(startup_nodes=known, max_connections=4, **kwargs)


def _one_node_client(cluster: RedisCluster, settings: dict[str, Any]) -> Redis:
    """A plain client on one connection to a primary of the cluster (a subscription)."""
    primaries = cluster.get_primaries() or cluster.get_nodes()
    node = primaries[0] if primaries else None
    host, port = (node.host, node.port) if node is not None else ("127.0.0.1", 6379)
    kwargs = {k: v for k, v in settings.items() if k not in ("reinitialize_steps",)}
    pool = ConnectionPool(
        connection_class=SSLConnection if kwargs.pop("ssl", False) else Connection,
        max_connections=1,
        host=host,
        port=port,
        **kwargs,
    )
    return Redis.from_pool(pool)


# The INFO figures /health shows, summed over a cluster's primaries.
_SUMMED_INFO = (
    "used_memory",
    "keyspace_hits",
    "keyspace_misses",
    "total_commands_processed",
    "total_connections_received",
    "evicted_keys",
)


async def _cluster_info(cluster: RedisCluster | None) -> dict[str, Any]:
    """INFO of every primary: the counters /health shows summed, the worst
    fragmentation, the rest (policy, peak) as the first primary says."""
    assert cluster is not None
    total: dict[str, Any] = {}
    for node in cluster.get_primaries():
        reply = await cluster.execute_command("INFO", "all", target_nodes=node)
        info = reply.get(node.name, reply) if isinstance(reply, dict) else {}
        if not isinstance(info, dict):
            continue
        for key, value in info.items():
            number = value if isinstance(value, int | float) else None
            if key in _SUMMED_INFO and number is not None:
                so_far = total.get(key)
                total[key] = (so_far if isinstance(so_far, int | float) else 0) + number
            elif key == "mem_fragmentation_ratio" and number is not None:
                total[key] = max(float(total.get(key, 0.0)), float(number))
            else:
                total.setdefault(key, value)
    if isinstance(total.get("used_memory"), int | float):
        total["used_memory_human"] = f"{total['used_memory'] / (1024 * 1024):.2f}M"
    return total


def _slot_busy(exc: BaseException) -> bool:
    """TRYAGAIN, or redis-py's ClusterError after its redirections ran out (exactly
    ClusterError: ClusterDownError, its subclass, means the cluster is down)."""
    return isinstance(exc, TryAgainError) or type(exc) is ClusterError


def _standalone_address(kwargs: dict[str, Any]) -> str:
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    host = str(kwargs.get("host", "localhost"))
    return f"{host}:{kwargs.get('port', 6379)}"
