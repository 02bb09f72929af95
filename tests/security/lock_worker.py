"""A separate process using LockService against the shared Redis and database.

Run as `python -m tests.security.lock_worker <mode> ...` from the worktree root.

contend: start `--tasks` lock attempts at once (after the go-file appears); each holds
  the lock, checks that nobody else is inside (an O_EXCL marker file), does a
  read-sleep-write increment of a counter file (loses updates under overlap), records
  its fencing number with fence_allows, and appends one JSON line to `--out`.
stale: take the lock with a short lease and no renewal, signal, wait until told
  (the lease lapsed and a newer holder wrote), then try to write: prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool
from healthforms.security.locks import LockService


def build_service(args: argparse.Namespace) -> tuple[LockService, RedisService, Database]:
    pool = build_pool(args.redis_url, timeout_s=0.5)
    redis = RedisService(pool, RedisTarget(args.redis_url, False, False), prefix=args.prefix)
    db = Database.connect(args.db_url)
    return LockService(redis, db, Metrics()), redis, db


async def wait_for_file(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(str(path))
        await asyncio.sleep(0.005)


def append_line(path: Path, record: dict[str, object]) -> None:
    # One small O_APPEND write per line: lines from several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


async def contend(args: argparse.Namespace) -> None:
    service, redis, db = build_service(args)
    work = Path(args.work)
    marker = work / "inside"
    counter = work / "counter"
    out = work / "results.jsonl"
    (work / f"ready-{os.getpid()}").touch()
    await wait_for_file(work / "go")

    async def attempt(index: int) -> None:
        async with service.hold(args.key, 5_000, wait_ms=60_000, kind="test") as lock:
            entered = time.time()
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                append_line(out, {"pid": os.getpid(), "overlap": True})
                raise
            os.close(fd)
            try:
                value = int(counter.read_text())
                await asyncio.sleep(0.01)
                async with db.sessions() as session, session.begin():
                    allowed = await service.fence_allows(session, args.key, lock.fence)
                counter.write_text(str(value + 1))
                append_line(
                    out,
                    {
                        "pid": os.getpid(),
                        "index": index,
                        "fence": lock.fence,
                        "backend": lock.backend,
                        "allowed": allowed,
                        "entered": entered,
                    },
                )
            finally:
                marker.unlink()

    try:
        await asyncio.gather(*(attempt(i) for i in range(args.tasks)))
    finally:
        await redis.close()
        await db.dispose()


async def stale(args: argparse.Namespace) -> None:
    service, redis, db = build_service(args)
    work = Path(args.work)
    try:
        lock = await service.acquire(args.key, 200)
        assert lock is not None
        (work / "stale-acquired").write_text(str(lock.fence))
        await wait_for_file(work / "stale-go")  # the lease lapsed; a newer holder wrote
        async with db.sessions() as session, session.begin():
            allowed = await service.fence_allows(session, args.key, lock.fence)
        released = await service.release(lock)
        print(json.dumps({"fence": lock.fence, "allowed": allowed, "released": released}))
    finally:
        await redis.close()
        await db.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["contend", "stale"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(contend(args) if args.mode == "contend" else stale(args))


if __name__ == "__main__":
    main(sys.argv[1:])
