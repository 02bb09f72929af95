"""The pipelined connection of the Lua scripts, on real servers (both legs).

Replies must reach the right caller whatever happens: many callers at once, error
replies, cancelled callers, a hung server, a restarted one, a flushed script cache.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from healthforms.redis.client import build_pool
from healthforms.redis.embedded import EmbeddedRedis, free_port
from healthforms.redis.errors import PoolExhausted, RedisUnavailable
from healthforms.redis.multiplex import Multiplexer, spec_from_pool
from healthforms.redis.scripts import LuaScript
from tests.redis.helpers import service_for
from tests.support import legs
from tests.support.servers import hung

ECHO = "return {KEYS[1], ARGV[1]}"


def mux_for(url: str, timeout_s: float = 0.5, **kwargs: int) -> Multiplexer:
    pool = build_pool(url, timeout_s=timeout_s)
    return Multiplexer(
        spec_from_pool(pool.connection_class, pool.connection_kwargs, timeout_s),
        timeout_s=timeout_s,
        **kwargs,
    )


async def _mux_connections(url: str) -> int:
    client = Redis.from_url(url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return sum(1 for entry in clients if entry.get("name") == "healthforms-mux")


async def test_every_concurrent_caller_gets_its_own_reply_over_one_connection(
    private_redis: EmbeddedRedis,
) -> None:
    mux = mux_for(private_redis.url)
    try:
        sha = await mux.script_load(ECHO)
        replies = await asyncio.gather(
            *(mux.evalsha(sha, 1, f"key-{i}", f"value-{i}") for i in range(2000))
        )
        assert replies == [[f"key-{i}".encode(), f"value-{i}".encode()] for i in range(2000)]
        assert await _mux_connections(private_redis.url) == 1
        stats = mux.stats()
        assert stats["connects"] == 1
        assert stats["commands"] == 2001
        assert stats["in_flight"] == 0
    finally:
        await mux.close()


def test_the_same_under_uvloop_which_serve_runs_on(private_redis: EmbeddedRedis) -> None:
    # uvloop's transports are not asyncio.Transport subclasses: run a real exchange on it.
    import uvloop

    async def exchange() -> list[object]:
        mux = mux_for(private_redis.url)
        try:
            return list(await asyncio.gather(*(mux.execute("ECHO", str(i)) for i in range(500))))
        finally:
            await mux.close()

    assert uvloop.run(exchange()) == [str(i).encode() for i in range(500)]


async def test_error_replies_raise_redis_py_errors_and_keep_the_order(redis_url: str) -> None:
    mux = mux_for(redis_url)
    try:
        results = await asyncio.gather(
            mux.execute("PING"),
            mux.evalsha("0" * 40, 0),
            mux.execute("INCR", "hft:mux:not-a-number:" + str(time.time_ns())),
            mux.execute("EVAL", "return redis.call('INCR', KEYS[1])", 1, "hft:mux:bad"),
            mux.execute("ECHO", "after"),
            return_exceptions=True,
        )
        await mux.execute("DEL", "hft:mux:not-a-number", "hft:mux:bad")
    finally:
        await mux.close()
    assert results[0] == b"PONG"
    assert isinstance(results[1], NoScriptError)
    assert results[2] == 1
    assert isinstance(results[3], ResponseError) or results[3] == 1
    assert results[4] == b"after"


async def test_lua_script_reloads_after_script_flush_on_the_multiplexer(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    service = service_for(private_redis.url)
    path = tmp_path / "echo.lua"
    path.write_text(ECHO)
    echo = LuaScript(path)
    try:
        assert await service.script(echo, ["k"], ["v"]) == [b"k", b"v"]
        await service.pipelined(lambda m: m.execute("SCRIPT", "FLUSH"))
        assert await service.script(echo, ["k2"], ["v2"]) == [b"k2", b"v2"]
    finally:
        await service.close()


async def test_a_cancelled_caller_does_not_shift_the_replies(private_redis: EmbeddedRedis) -> None:
    mux = mux_for(private_redis.url)
    try:
        await mux.execute("PING")
        for round_ in range(50):
            doomed = asyncio.ensure_future(mux.execute("ECHO", f"doomed-{round_}"))
            await asyncio.sleep(0)  # queued and written, reply not read yet
            doomed.cancel()
            assert await mux.execute("ECHO", f"kept-{round_}") == f"kept-{round_}".encode()
    finally:
        await mux.close()


async def test_a_hung_server_times_out_every_caller_then_recovers(
    private_redis: EmbeddedRedis,
) -> None:
    mux = mux_for(private_redis.url, timeout_s=0.3)
    try:
        await mux.execute("PING")
        with hung(private_redis):
            began = time.monotonic()
            results = await asyncio.gather(
                *(mux.execute("ECHO", str(i)) for i in range(20)), return_exceptions=True
            )
            waited = time.monotonic() - began
        assert all(isinstance(result, RedisTimeoutError) for result in results)
        assert waited < 2.0
        assert await mux.execute("ECHO", "back") == b"back"
        assert mux.stats()["timeouts"] == 1
        assert mux.stats()["connects"] == 2
    finally:
        await mux.close()


async def test_a_restarted_server_fails_callers_in_flight_and_the_next_call_reconnects(
    private_redis: EmbeddedRedis,
) -> None:
    service = service_for(private_redis.url)
    try:
        assert await service.pipelined(lambda m: m.execute("PING"), idempotent=True) == b"PONG"
        private_redis.restart()
        # The server closed the connection: an idempotent call reconnects and succeeds.
        assert await service.pipelined(lambda m: m.execute("PING"), idempotent=True) == b"PONG"
        assert service.mux.stats()["dropped"] == 1
        private_redis.stop()
        with pytest.raises(RedisUnavailable):
            await service.pipelined(lambda m: m.execute("PING"))
        assert not service.available
    finally:
        await service.close()


async def test_too_many_commands_in_flight_are_refused_as_pool_exhaustion(
    redis_url: str,
) -> None:
    mux = mux_for(redis_url, max_in_flight=10)
    try:
        await mux.execute("PING")
        results = await asyncio.gather(
            *(mux.execute("ECHO", str(i)) for i in range(30)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, PoolExhausted)]
        answered = [r for r in results if isinstance(r, bytes)]
        assert len(answered) == 10 and len(refused) == 20
        assert mux.stats()["overloaded"] == 20
        assert await mux.execute("ECHO", "later") == b"later"
    finally:
        await mux.close()


async def test_password_and_database_come_from_the_url(tmp_path: Path) -> None:
    password = "mux-pw-" + "y" * 16
    port = free_port()
    with EmbeddedRedis.start(
        tmp_path / "auth",
        binary=legs.private_server_binary(),
        port=port,
        appendonly=False,
        password=password,
    ):
        mux = mux_for(f"redis://:{password}@127.0.0.1:{port}/3")
        try:
            await mux.execute("SET", "hft:mux:db", "3", "EX", 60)
            assert await mux.execute("CLIENT", "GETNAME") == b"healthforms-mux"
        finally:
            await mux.close()
        check = Redis.from_url(f"redis://:{password}@127.0.0.1:{port}/3")
        try:
            assert await check.get("hft:mux:db") == b"3"
        finally:
            await check.aclose()
        wrong = mux_for(f"redis://:not-{password}@127.0.0.1:{port}/0")
        try:
            with pytest.raises(AuthenticationError) as refused:
                await wrong.execute("PING")
            assert password not in str(refused.value)
            assert not wrong.is_connected
        finally:
            await wrong.close()


async def test_unix_socket(tmp_path: Path) -> None:
    folder = Path("/tmp") / f"hfm-{tmp_path.name[-12:]}"
    with EmbeddedRedis.start(
        folder, binary=legs.private_server_binary(), appendonly=False, use_unix_socket=True
    ) as server:
        mux = mux_for(server.url)
        try:
            assert await mux.execute("PING") == b"PONG"
        finally:
            await mux.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    mux = mux_for(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RedisConnectionError):
            await mux.execute("PING")
    finally:
        await mux.close()


async def test_health_pool_figures_count_the_pipelined_connection(redis_url: str) -> None:
    service = service_for(redis_url)
    try:
        before = service.pool_stats()
        await service.pipelined(lambda m: m.execute("PING"))
        for _ in range(4):
            await service.pipelined(lambda m: m.execute("PING"))
        after = service.pool_stats()
        assert after["misses"] - before["misses"] == 1  # the one connection made
        assert after["hits"] - before["hits"] == 4
        assert after["total_connections"] == before["total_connections"] + 1
    finally:
        await service.close()


async def test_a_connection_attempt_whose_callers_all_left_does_not_poison_the_next(
    private_redis: EmbeddedRedis,
) -> None:
    mux = mux_for(private_redis.url, timeout_s=0.3)
    try:
        with hung(private_redis):  # TCP connects, the handshake gets no answer
            caller = asyncio.ensure_future(mux.execute("PING"))
            await asyncio.sleep(0.05)
            caller.cancel()
            await asyncio.sleep(0.5)  # the abandoned attempt times out meanwhile
        assert await mux.execute("PING") == b"PONG"
    finally:
        await mux.close()
