"""Lock acquire+release cycles/s: healthforms LockService vs redis-py and python-redis-lock.

    python -m bench.locks [--redis-url redis://127.0.0.1:6379/0] [--seconds 2] [--tasks 16]

All contenders talk to the same server in one run (by default a private Valkey
started for the run, so the shared Redis is not loaded). Scenarios:
- c1:          one worker, acquire + release in a loop (two round trips per cycle);
- parallel:    `--tasks` workers, each on its own key (throughput, no contention);
- contended:   `--tasks` workers on ONE key, each waiting for the lock, taking it and
               releasing it straight away; also reports fairness (min/max grants per
               worker; 1.0 = perfectly even, 0 = someone starved).
healthforms and redis-py run as asyncio tasks on the same client settings
(BlockingConnectionPool, hiredis); redis-py polls every 10 ms while waiting, as
ours does across processes (ours also wakes local waiters at once on release).
python-redis-lock is synchronous: its workers are threads on a sync client, so
read its figures as "what a threaded sync app gets", not a like-for-like loop.
Figures move a lot on a shared machine: compare the ratios within one run.
Results: a table on stdout and bench/results/locks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import redis as sync_redis
import redis_lock  # type: ignore[import-untyped]
from redis.asyncio import Redis
from redis.asyncio.lock import Lock as RedisPyLock

from healthforms.db.engine import Database
from healthforms.db.migrate import upgrade
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.locks import LockService

RESULTS = Path(__file__).parent / "results" / "locks.json"
TTL_MS = 5_000
MAX_CYCLES_PER_WORKER = 200_000  # bounded loops even on a very fast machine


@dataclass
class Figure:
    contender: str
    scenario: str
    workers: int
    cycles: int
    seconds: float
    cycles_per_s: float
    fairness: float | None  # min/max grants per worker (contended only)
    note: str = ""


def fairness(counts: list[int]) -> float:
    """min/max grants per worker: 1.0 = even, 0.0 = a worker starved."""
    top = max(counts, default=0)
    return round(min(counts) / top, 3) if top else 0.0


async def run_async(
    workers: int, seconds: float, cycle: Callable[[int], Awaitable[None]]
) -> tuple[int, float, list[int]]:
    counts = [0] * workers
    stop_at = time.perf_counter() + seconds

    async def loop(index: int) -> None:
        while time.perf_counter() < stop_at and counts[index] < MAX_CYCLES_PER_WORKER:
            await cycle(index)
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(workers)))
    return sum(counts), time.perf_counter() - started, counts


def run_threads(
    workers: int, seconds: float, cycle: Callable[[int], None]
) -> tuple[int, float, list[int]]:
    counts = [0] * workers
    stop_at = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < stop_at and counts[index] < MAX_CYCLES_PER_WORKER:
            cycle(index)
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - started, counts


def figure(
    contender: str, scenario: str, workers: int, result: tuple[int, float, list[int]], note: str
) -> Figure:
    cycles, elapsed, counts = result
    return Figure(
        contender=contender,
        scenario=scenario,
        workers=workers,
        cycles=cycles,
        seconds=round(elapsed, 3),
        cycles_per_s=round(cycles / elapsed, 1),
        fairness=fairness(counts) if scenario == "contended" else None,
        note=note,
    )


class Contender:
    name = ""
    note = ""

    async def cycle(self, scenario: str, index: int) -> None:
        raise NotImplementedError

    async def run(
        self, scenario: str, workers: int, seconds: float
    ) -> tuple[int, float, list[int]]:
        return await run_async(workers, seconds, lambda i: self.cycle(scenario, i))

    async def close(self) -> None:
        pass


class Ours(Contender):
    name = "healthforms"
    note = "asyncio; FIFO queue"

    def __init__(self, url: str, db_url: str) -> None:
        self.prefix = f"bench:{secrets.token_hex(4)}:"
        pool = build_pool(url, max_connections=64)
        self.redis = RedisService(pool, RedisTarget(url, False, False), self.prefix)
        self.db = Database.connect(db_url)
        self.locks = LockService(self.redis, self.db, Metrics())
        self.key = f"lock:bench:{{{secrets.token_hex(4)}}}"

    async def cycle(self, scenario: str, index: int) -> None:
        if scenario == "parallel":
            lock = await self.locks.acquire(f"lock:bench:{{p{index}}}", TTL_MS)
        elif scenario == "contended":
            lock = await self.locks.acquire(self.key, TTL_MS, wait_ms=30_000)
        else:
            lock = await self.locks.acquire(self.key, TTL_MS)
        assert lock is not None
        await self.locks.release(lock)

    async def close(self) -> None:
        await delete_prefixed(self.redis.client, self.prefix)
        await self.redis.close()
        await self.db.dispose()


class RedisPy(Contender):
    name = "redis-py asyncio Lock"
    note = "asyncio; polls every 10 ms"

    def __init__(self, url: str) -> None:
        self.client = Redis(connection_pool=build_pool(url, max_connections=64))
        self.prefix = f"bench:{secrets.token_hex(4)}:"

    async def cycle(self, scenario: str, index: int) -> None:
        name = f"{self.prefix}lock:{{p{index}}}" if scenario == "parallel" else f"{self.prefix}x"
        lock = RedisPyLock(
            self.client, name, timeout=TTL_MS / 1000, sleep=0.01, blocking_timeout=30
        )
        assert await lock.acquire()
        await lock.release()

    async def close(self) -> None:
        await delete_prefixed(self.client, self.prefix)
        await self.client.aclose()


class Floor(Contender):
    name = "floor: SET NX PX + DEL"
    note = "no lock semantics; 2 round trips"

    def __init__(self, url: str) -> None:
        self.client = Redis(connection_pool=build_pool(url, max_connections=64))
        self.prefix = f"bench:{secrets.token_hex(4)}:"

    async def run(
        self, scenario: str, workers: int, seconds: float
    ) -> tuple[int, float, list[int]]:
        if scenario == "contended":
            return 0, 1.0, [0]  # spinning without waiting says nothing
        return await super().run(scenario, workers, seconds)

    async def cycle(self, scenario: str, index: int) -> None:
        name = f"{self.prefix}{{p{index}}}"
        assert await self.client.set(name, "t", nx=True, px=TTL_MS)
        await self.client.delete(name)

    async def close(self) -> None:
        await delete_prefixed(self.client, self.prefix)
        await self.client.aclose()


class PythonRedisLock(Contender):
    name = "python-redis-lock"
    note = "sync, threads; BLPOP wake-up"

    def __init__(self, url: str) -> None:
        self.client = sync_redis.Redis.from_url(url, max_connections=64)
        self.prefix = f"bench:{secrets.token_hex(4)}:"

    def sync_cycle(self, scenario: str, index: int) -> None:
        name = f"{self.prefix}{{p{index}}}" if scenario == "parallel" else f"{self.prefix}x"
        lock = redis_lock.Lock(self.client, name, expire=TTL_MS // 1000)
        # Its timeout may not exceed the lease (TimeoutTooLarge).
        assert lock.acquire(timeout=TTL_MS // 1000 - 1)
        lock.release()

    async def run(
        self, scenario: str, workers: int, seconds: float
    ) -> tuple[int, float, list[int]]:
        return await asyncio.to_thread(
            run_threads, workers, seconds, lambda i: self.sync_cycle(scenario, i)
        )

    async def close(self) -> None:
        keys = list(self.client.scan_iter(match=f"*{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)


SCENARIOS = ("c1", "parallel", "contended")


async def bench_all(url: str, db_url: str, seconds: float, tasks: int, rounds: int) -> list[Figure]:
    contenders: list[Contender] = [
        Ours(url, db_url),
        RedisPy(url),
        PythonRedisLock(url),
        Floor(url),
    ]
    samples: dict[tuple[str, str], list[tuple[int, float, list[int]]]] = {}
    try:
        for contender in contenders:  # warm up: scripts loaded, pools filled
            await contender.run("c1", 1, 0.2)
        # Rounds alternate the contenders, so a burst of load from elsewhere on the
        # machine hits all of them alike; the median round is reported.
        for _ in range(rounds):
            for scenario in SCENARIOS:
                workers = 1 if scenario == "c1" else tasks
                for contender in contenders:
                    result = await contender.run(scenario, workers, seconds)
                    samples.setdefault((contender.name, scenario), []).append(result)
    finally:
        for contender in contenders:
            await contender.close()
    figures: list[Figure] = []
    for contender in contenders:
        for scenario in SCENARIOS:
            runs = sorted(samples[(contender.name, scenario)], key=lambda r: r[0] / r[1])
            if not runs[0][0] and not runs[-1][0]:
                continue
            median = runs[len(runs) // 2]
            workers = 1 if scenario == "c1" else tasks
            figures.append(figure(contender.name, scenario, workers, median, contender.note))
    return figures


def print_table(figures: list[Figure]) -> dict[str, dict[str, float]]:
    ours = {f.scenario: f.cycles_per_s for f in figures if f.contender == Ours.name}
    ratios: dict[str, dict[str, float]] = {}
    header = (
        f"{'contender':<24} {'scenario':<10} {'workers':>7} {'cycles/s':>10} "
        f"{'ours/this':>9} {'fairness':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        ratio = round(ours[f.scenario] / f.cycles_per_s, 2) if f.cycles_per_s else 0.0
        ratios.setdefault(f.contender, {})[f.scenario] = ratio
        fair = "" if f.fairness is None else f"{f.fairness:.2f}"
        print(
            f"{f.contender:<24} {f.scenario:<10} {f.workers:>7} {f.cycles_per_s:>10.0f} "
            f"{ratio:>9.2f} {fair:>8}  {f.note}"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", help="default: a private Valkey started for the run")
    parser.add_argument("--seconds", type=float, default=1.0, help="per run (max 30)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--tasks", type=int, default=16, help="workers for parallel/contended")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.2), 30.0)
    tasks = min(max(args.tasks, 2), 64)
    rounds = min(max(args.rounds, 1), 9)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-locks-")))
        if args.redis_url:
            url = args.redis_url
        else:
            server = stack.enter_context(EmbeddedRedis.start(tmp / "valkey", appendonly=False))
            url = server.url
        db_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        upgrade(db_url)  # the fallback table exists, though Redis stays up here

        figures = asyncio.run(bench_all(url, db_url, seconds, tasks, rounds))

    print(
        f"\nlock acquire+release cycles/s, median of {rounds} x {seconds:g}s, same server ({url})\n"
    )
    ratios = print_table(figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds_per_run": seconds,
                "rounds": rounds,
                "workers": tasks,
                "ttl_ms": TTL_MS,
                "figures": [asdict(f) for f in figures],
                "ours_over_contender": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
