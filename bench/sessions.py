"""Benchmark: the authenticated hot path against a bare endpoint on the same server.

    /work/venv/bin/python bench/sessions.py [--seconds 5] [--connections 50]

Starts a private Valkey (or --redis-url), a SQLite database and one uvicorn worker
running this app plus two bench routes, then drives it with wrk (if installed, else an
httpx client in another process) and prints:
- requests/s and p99 of GET /bench/bare (no cookie), GET /bench/whoami (session check
  only) and GET /api/auth/me (session check + a database read), and the ratios;
- Redis commands per authenticated request (INFO commandstats: EVALSHA calls / requests);
- Redis bytes per live session (MEMORY USAGE of the record plus its index entry).
Figures move a lot between runs on a shared machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from healthforms.security.context import CurrentPrincipal

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench password 123"


def bench_app() -> FastAPI:
    """create_app() plus a bare endpoint and a session-only endpoint (uvicorn factory)."""
    from healthforms.app import create_app

    app = create_app()

    @app.get("/bench/bare")
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/whoami")
    async def whoami(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user": principal.user_id}

    return app


def _free_port() -> int:
    from healthforms.redis.embedded import free_port

    return free_port()


async def _create_user(database_url: str, email: str) -> None:
    from healthforms.db.engine import Database
    from healthforms.identity.service import create_user, get_or_create_organization
    from healthforms.security.principal import Role

    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            org, _ = await get_or_create_organization(session, "Bench Clinic")
            await create_user(
                session,
                organization_id=org.id,
                email=email,
                name="Bench",
                password=PASSWORD,
                role=Role.ADMIN,
            )
    finally:
        await db.dispose()


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/bench/bare", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in 60 s")


def _wrk(url: str, seconds: int, connections: int, cookie: str | None) -> tuple[float, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cookie:
        args[1:1] = ["-H", f"Cookie: session={cookie}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = 0.0
    if p99_match:
        value, unit = float(p99_match.group(1)), p99_match.group(2)
        p99 = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        print(f"    warning: {non2xx.group(1)} non-2xx responses from {url}")
    return rps, p99


_HTTPX_CLIENT = """
import asyncio, sys, time, httpx
url, seconds, conns, cookie = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
async def main():
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    limits = httpx.Limits(max_connections=conns)
    lat = []
    async with httpx.AsyncClient(limits=limits, headers=headers) as c:
        end = time.monotonic() + seconds
        async def worker():
            while time.monotonic() < end:
                t = time.perf_counter(); await c.get(url); lat.append(time.perf_counter() - t)
        await asyncio.gather(*(worker() for _ in range(conns)))
    lat.sort()
    print(len(lat) / seconds, lat[int(len(lat) * 0.99)] * 1000 if lat else 0)
asyncio.run(main())
"""


def _httpx_load(
    url: str, seconds: int, connections: int, cookie: str | None
) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _HTTPX_CLIENT, url, str(seconds), str(connections), cookie or ""],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout.split()
    return float(out[0]), float(out[1])


async def _memory(redis: Any, key: str) -> int:
    return int(await redis.client.memory_usage(key, samples=0) or 0)


async def _memory_per_session(redis_url: str, prefix: str, users: int) -> dict[str, Any]:
    """Create sessions with the real store and read MEMORY USAGE of what they cost."""
    from healthforms.config import Settings
    from healthforms.redis.client import RedisService, RedisTarget, build_pool
    from healthforms.security.principal import Role
    from healthforms.security.sessions import SessionStore

    settings = Settings(redis_prefix=prefix)
    redis = RedisService(build_pool(redis_url), RedisTarget(redis_url, False, False), prefix)
    store = SessionStore(redis, settings, secrets.token_bytes(32))
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537"
    records = index_one = index_two = 0
    try:
        for i in range(users):
            user_id = f"usr_{secrets.token_urlsafe(16)}"
            created = []
            for _ in range(2):
                _, cookie, _ = await store.create(
                    user_id=user_id,
                    organization_id="org_" + secrets.token_urlsafe(16),
                    role=Role.EDITOR,
                    auth_method="password",
                    mfa=False,
                    ip=f"198.51.100.{i % 250}",
                    user_agent=ua,
                )
                created.append(cookie)
                if len(created) == 1:
                    index_one += await _memory(redis, store.index_key(user_id))
            index_two += await _memory(redis, store.index_key(user_id))
            for cookie in created:
                records += await _memory(redis, store.session_key(user_id, cookie.session_hash))
        encoding = await redis.client.object(
            "encoding", store.session_key(user_id, created[0].session_hash)
        )
    finally:
        async for key in redis.client.scan_iter(match=f"{prefix}*", count=1000):
            await redis.client.delete(key)
        await redis.close()
    record = records / (2 * users)
    return {
        "record": record,
        "index_entry": (index_two - index_one) / users,
        "index_key_one_session": index_one / users,
        "encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
    }


def _pg_admin_dsn(admin_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_pg_database(admin_url: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"hf_bench_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(_pg_admin_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(admin_url: str, database_url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    conn = await asyncpg.connect(_pg_admin_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _commands_per_request(base: str, cookie: str, redis_url: str, count: int) -> float:
    """Exact: EVALSHA (and any other client command) calls over `count` sequential GETs."""
    async with httpx.AsyncClient(headers={"Cookie": f"session={cookie}"}) as http:
        before = await _commandstats(redis_url)
        for _ in range(count):
            (await http.get(f"{base}/api/auth/me")).raise_for_status()
        after = await _commandstats(redis_url)
    script_internal = {"time", "hmget", "hset", "pexpire", "get", "set", "del", "info"}
    calls = sum(after[name] - before.get(name, 0) for name in after if name not in script_internal)
    return calls / count


async def _commandstats(redis_url: str) -> dict[str, int]:
    from redis.asyncio import Redis

    async with Redis.from_url(redis_url) as redis:
        info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=500, help="users for the memory figure")
    parser.add_argument("--redis-url", default=None, help="use this Redis (default: private)")
    parser.add_argument(
        "--postgres",
        default=None,
        help="PostgreSQL admin URL (postgresql+asyncpg://...); a database is created and "
        "dropped for the run (default: SQLite)",
    )
    args = parser.parse_args()
    seconds = max(1, min(args.seconds, 60))
    load = _wrk if shutil.which("wrk") else _httpx_load

    from healthforms.db.migrate import upgrade
    from healthforms.redis.embedded import EmbeddedRedis

    work = Path(tempfile.mkdtemp(prefix="hf-bench-"))
    embedded = None
    server = None
    pg_database: str | None = None
    try:
        redis_url = args.redis_url
        if redis_url is None:
            embedded = EmbeddedRedis.start(work / "redis", appendonly=False)
            redis_url = embedded.url
        prefix = f"hfbench:{secrets.token_hex(3)}:"
        if args.postgres:
            database_url = asyncio.run(_create_pg_database(args.postgres))
            pg_database = database_url
        else:
            database_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        upgrade(database_url)
        email = "bench@example.test"
        asyncio.run(_create_user(database_url, email))

        port = _free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HEALTHFORMS_REDIS_PREFIX": prefix,
            "HEALTHFORMS_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "HEALTHFORMS_ENV": "development",
            "HEALTHFORMS_DATA_DIR": str(work / "data"),
            "HEALTHFORMS_LOG_LEVEL": "error",
            "HEALTHFORMS_RATE_LIMIT_API": "1000000/s+1000000",
        }
        log = work / "server.log"
        with log.open("wb") as handle:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.sessions:bench_app",
                    "--factory",
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "error",
                ],  # fmt: skip
                cwd=str(ROOT),
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, server, log)
        login = httpx.post(
            f"{base}/api/auth/session-login", json={"email": email, "password": PASSWORD}
        )
        login.raise_for_status()
        cookie = login.cookies["session"]

        # Warm up (script load, connection pools), then measure each endpoint in turn.
        load(f"{base}/api/auth/me", 1, args.connections, cookie)
        load(f"{base}/bench/bare", 1, args.connections, None)
        results: dict[str, tuple[float, float]] = {}
        per_request = asyncio.run(_commands_per_request(base, cookie, redis_url, 200))
        results["me"] = load(f"{base}/api/auth/me", seconds, args.connections, cookie)
        results["whoami"] = load(f"{base}/bench/whoami", seconds, args.connections, cookie)
        results["bare"] = load(f"{base}/bench/bare", seconds, args.connections, None)

        memory = asyncio.run(_memory_per_session(redis_url, prefix + "mem:", args.sessions))

        bare_rps = results["bare"][0]
        print(
            f"healthforms session bench: {seconds}s per endpoint, {args.connections} connections,"
            f" 1 uvicorn worker, load by {load.__name__.strip('_')}"
        )
        for name, label in (
            ("bare", "GET /bench/bare (no session)"),
            ("whoami", "GET /bench/whoami (session check only)"),
            ("me", "GET /api/auth/me (session + DB read)"),
        ):
            rps, p99 = results[name]
            print(f"  {label:42s} {rps:9.0f} req/s  p99 {p99:7.1f} ms  ratio {rps / bare_rps:.2f}")
        print(
            f"  Redis client commands per authenticated GET (200 sequential, INFO "
            f"commandstats, Lua-internal calls excluded): {per_request:.2f}"
        )
        degraded = sum(
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"{base}/metrics").text.splitlines()
            if line.startswith("healthforms_degraded_decisions_total{")
        )
        print(f"  decisions taken without Redis during the run (should be 0): {degraded:.0f}")
        per_session = memory["record"] + memory["index_entry"]
        print(
            f"  Redis bytes per live session: {per_session:.0f} B "
            f"(record {memory['record']:.0f} B [{memory['encoding']}] + index entry "
            f"{memory['index_entry']:.0f} B; a user's first session also carries the index "
            f"key itself: {memory['index_key_one_session']:.0f} B) target <= 300 B"
        )
        print(json.dumps({"ratio_me": results["me"][0] / bare_rps,
                          "redis_commands_per_get": per_request,
                          "ratio_whoami": results["whoami"][0] / bare_rps,
                          "bytes_per_session": per_session}))  # fmt: skip
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        if embedded is not None:
            embedded.stop()
        if pg_database is not None:
            asyncio.run(_drop_pg_database(args.postgres, pg_database))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
