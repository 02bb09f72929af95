"""One shared, pipelined connection for the Lua scripts of the hot path.

redis-py's asyncio client takes a connection from the pool, writes one command, waits
for its reply and returns the connection: about 40 µs of CPU per command with 50
requests in flight (bench/ratelimit.py), mostly coroutine and pool bookkeeping, plus a
send and a receive system call per command. Every one-round-trip operation of the
service (session check, rate check, nonce claim, lock acquire) is a single EVALSHA, so
they share one connection here instead: the commands written during one event-loop
turn leave in one write, hiredis parses the replies, and Redis answers in order on a
connection, so the n-th reply belongs to the n-th caller. About 3 µs per command.

Only single request/reply commands come through here; no blocking command, MULTI or
SUBSCRIBE (one of those would hold up every caller behind it). Everything else uses
the redis-py pool (RedisService.call).

Failures:
- The oldest outstanding command is not answered within `timeout_s`: the server is
  hung. The connection is dropped and every outstanding command fails with
  TimeoutError (their replies could no longer be matched to them).
- The server closes or resets the connection: every outstanding command fails with
  ConnectionError. The next command reconnects.
- A caller cancelled while waiting keeps its place; its reply is read and dropped.
- More than `max_in_flight` outstanding commands: PoolExhausted, like the pool.

Errors are redis-py's exceptions, so callers handle both clients the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import (
    RedisSSLContext,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from healthforms.redis.errors import PoolExhausted

Arg = str | bytes | int | float
# hiredis' stub types the argument as a one-element tuple; it takes any length.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)

# Error replies that mean something to callers; the rest are ResponseError.
_ERROR_CLASSES: tuple[tuple[str, type[ResponseError] | type[RedisConnectionError]], ...] = (
    ("NOSCRIPT ", NoScriptError),
    ("LOADING ", BusyLoadingError),
    ("READONLY ", ReadOnlyError),
    ("NOAUTH ", AuthenticationError),
    ("WRONGPASS ", AuthenticationError),
)


def _error(reply: hiredis.ReplyError) -> Exception:
    text = str(reply)
    for prefix, cls in _ERROR_CLASSES:
        if text.startswith(prefix):
            return cls(text[len(prefix) :])
    return ResponseError(text)


@dataclass(slots=True)
class MultiplexCounters:
    commands: int = 0
    writes: int = 0  # writes to the socket: commands sent in one loop turn share one
    connects: int = 0  # connections made (the first one and every reconnect)
    dropped: int = 0  # connections lost under load or found closed
    timeouts: int = 0  # connections given up because the server did not answer
    overloaded: int = 0  # commands refused at max_in_flight


class _Protocol(asyncio.Protocol):
    """The connection: writes batched per loop turn, replies matched in order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float,
        counters: MultiplexCounters,
        readonly_drops: bool = False,
    ) -> None:
        self._loop = loop
        # Sentinel: a READONLY reply means this server was demoted (a failover); drop
        # the connection so the next command asks the sentinels for the new primary.
        self._readonly_drops = readonly_drops
        self._counters = counters
        self._timeout = timeout_s
        self._reader = hiredis.Reader()
        # (future, deadline) per command in flight, oldest first.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.closed_with: BaseException | None = None
        self.timed_out = False
        self.connected = asyncio.Event()

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write/abort.
        self._transport = cast(asyncio.Transport, transport)
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self._fail(RedisConnectionError("reply without a command"))
                return
            future = waiting.popleft()[0]
            if future.done():  # its caller was cancelled: drop the reply
                continue
            if type(reply) is hiredis.ReplyError:
                error = _error(reply)
                if self._readonly_drops and isinstance(error, ReadOnlyError):
                    self._fail(RedisConnectionError("the primary is now a replica"), future)
                    return
                future.set_exception(error)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("connection closed by the server"))

    # Commands -----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    @property
    def is_usable(self) -> bool:
        return self.closed_with is None and self._transport is not None

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = self._loop
        future = loop.create_future()
        if self.closed_with is not None:
            future.set_exception(RedisConnectionError("connection closed"))
            return future
        deadline = loop.time() + self._timeout
        self._waiting.append((future, deadline))
        self._outgoing.append(packed)
        if not self._flush_scheduled:
            # Everything sent during this loop turn leaves in one write.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing or self._transport is None or self.closed_with is not None:
            self._outgoing.clear()
            return
        data = b"".join(self._outgoing) if len(self._outgoing) > 1 else self._outgoing[0]
        self._outgoing.clear()
        self._counters.writes += 1
        self._transport.write(data)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if deadline <= self._loop.time():
            self.timed_out = True
            self._fail(RedisTimeoutError("Timeout reading from the server"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _fail(self, error: BaseException, *also: asyncio.Future[Any]) -> None:
        """Fail every command in flight and drop the connection (replies are unmatched)."""
        for future in also:
            if not future.done():
                future.set_exception(type(error)(*error.args))
        if self.closed_with is None:
            self.closed_with = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._outgoing.clear()
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(type(error)(*error.args))
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(RedisConnectionError("connection closed"))


Opener = Callable[[Callable[[], _Protocol]], Awaitable[tuple[Any, _Protocol]]]


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """How to reach and greet the server: taken from the redis-py pool's settings."""

    open: Opener
    handshake: tuple[tuple[Arg, ...], ...]
    connect_timeout_s: float
    # Sentinel: READONLY drops the connection (the server was demoted).
    follows_primary: bool = False


Resolver = Callable[[], Awaitable[tuple[str, int]]]


def spec_from_pool(
    connection_class: type,
    kwargs: Mapping[str, Any],
    timeout_s: float,
    resolve: Resolver | None = None,
) -> ConnectionSpec:
    """The same server, TLS settings and credentials as the redis-py pool uses.

    `resolve`: where the server is, asked at every (re)connect (Sentinel: the current
    primary); without it, the pool's fixed host and port."""
    loop_opener: Opener
    if issubclass(connection_class, UnixDomainSocketConnection):
        path = str(kwargs["path"])

        async def open_unix(factory: Callable[[], _Protocol]) -> tuple[Any, _Protocol]:
            return await asyncio.get_running_loop().create_unix_connection(factory, path)

        loop_opener = open_unix
    else:
        host = str(kwargs.get("host", "localhost"))
        port = int(kwargs.get("port", 6379))
        context: ssl.SSLContext | None = None
        if issubclass(connection_class, SSLConnection):
            # redis-py builds the context: same verification as the pool (chain + host).
            context = RedisSSLContext(
                keyfile=kwargs.get("ssl_keyfile"),
                certfile=kwargs.get("ssl_certfile"),
                cert_reqs=kwargs.get("ssl_cert_reqs", "required"),
                ca_certs=kwargs.get("ssl_ca_certs"),
                ca_data=kwargs.get("ssl_ca_data"),
                ca_path=kwargs.get("ssl_ca_path"),
                check_hostname=bool(kwargs.get("ssl_check_hostname", True)),
                min_version=kwargs.get("ssl_min_version"),
                ciphers=kwargs.get("ssl_ciphers"),
            ).get()

        async def open_tcp(factory: Callable[[], _Protocol]) -> tuple[Any, _Protocol]:
            loop = asyncio.get_running_loop()
            if resolve is not None:
                where_host, where_port = await resolve()
                return await loop.create_connection(
                    factory,
                    where_host,
                    where_port,
                    ssl=context,
                    server_hostname=where_host if context is not None else None,
                )
            if context is None:
                return await loop.create_connection(factory, host, port)
            return await loop.create_connection(
                factory, host, port, ssl=context, server_hostname=host
            )

        loop_opener = open_tcp
    handshake: list[tuple[Arg, ...]] = []
    password = kwargs.get("password")
    username = kwargs.get("username")
    if password is not None:
        handshake.append(("AUTH", username, password) if username else ("AUTH", password))
    db = int(kwargs.get("db") or 0)
    if db:
        handshake.append(("SELECT", db))
    handshake.append(("CLIENT", "SETNAME", f"{kwargs.get('client_name') or 'healthforms'}-mux"))
    connect_timeout = kwargs.get("socket_connect_timeout") or timeout_s
    return ConnectionSpec(
        loop_opener, tuple(handshake), float(connect_timeout), follows_primary=resolve is not None
    )


class Multiplexer:
    """Many callers, one connection: see the module docstring."""

    def __init__(
        self, spec: ConnectionSpec, *, timeout_s: float = 0.5, max_in_flight: int = 5000
    ) -> None:
        self._spec = spec
        self._timeout = timeout_s
        self.max_in_flight = max_in_flight
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self.counters = MultiplexCounters()

    @property
    def is_connected(self) -> bool:
        return self._protocol is not None and self._protocol.is_usable

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """Send one command; the awaitable gives its reply (bytes, int, list, None)."""
        protocol = self._protocol
        if protocol is None or protocol.closed_with is not None:
            return self._connect_then(_pack(args))
        return self._send(protocol, _pack(args))

    def _send(self, protocol: _Protocol, packed: bytes) -> asyncio.Future[Any]:
        if protocol.in_flight >= self.max_in_flight:
            self.counters.overloaded += 1
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(
                PoolExhausted("redis multiplexer has too many commands in flight")
            )
            return refused
        self.counters.commands += 1
        return protocol.send(packed)

    async def _connect_then(self, packed: bytes) -> Any:
        protocol = await self._connect()
        return await self._send(protocol, packed)

    async def _connect(self) -> _Protocol:
        """One connection attempt at a time; concurrent callers wait for the same one."""
        if self._connecting is None:
            previous = self._protocol
            if previous is not None:
                self._protocol = None
                if previous.timed_out:
                    self.counters.timeouts += 1
                else:
                    self.counters.dropped += 1
            connecting = asyncio.ensure_future(self._open())
            self._connecting = connecting
            # Cleared when the attempt ends, even if every caller waiting on it was
            # cancelled meanwhile: the next call then tries afresh.
            connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, attempt: asyncio.Future[_Protocol]) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: a failure nobody awaited is not logged

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        made: list[_Protocol] = []

        def factory() -> _Protocol:
            made.append(_Protocol(loop, self._timeout, self.counters, self._spec.follows_primary))
            return made[-1]

        try:
            async with asyncio.timeout(self._spec.connect_timeout_s):
                _, protocol = await self._spec.open(factory)
                replies = [protocol.send(_pack(command)) for command in self._spec.handshake]
                await asyncio.gather(*replies)
        except BaseException as exc:
            for half_made in made:
                half_made.close()
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("Timeout connecting to the server") from None
            if isinstance(exc, OSError):
                reason = exc.strerror or type(exc).__name__
                raise RedisConnectionError(f"Error connecting to the server: {reason}") from None
            raise
        self.counters.connects += 1
        self._protocol = protocol
        return protocol

    # The few redis-py methods LuaScript uses, with redis-py's signatures and results.

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> str:
        sha = await self.execute("SCRIPT", "LOAD", source)
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    def stats(self) -> dict[str, int]:
        return {
            "connected": 1 if self.is_connected else 0,
            "in_flight": self._protocol.in_flight if self._protocol else 0,
            "commands": self.counters.commands,
            "writes": self.counters.writes,
            "connects": self.counters.connects,
            "dropped": self.counters.dropped,
            "timeouts": self.counters.timeouts,
            "overloaded": self.counters.overloaded,
        }

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
            self._connecting = None
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
