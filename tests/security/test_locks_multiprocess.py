"""Locks across real processes sharing one Redis and one database (and the fallback)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, RedisTarget, build_pool
from healthforms.redis.embedded import free_port
from healthforms.security.locks import LockService
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.multiprocess

PROCESSES = 4
TASKS_EACH = 5


@pytest.fixture(params=["redis", "database-fallback"])
def shared_redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    if request.param == "redis":
        return redis_url
    # Nothing listens there: every process finds Redis down and uses the database.
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
async def service(
    shared_redis_url: str, redis_prefix: str, database_url: str, redis_client: Redis
) -> AsyncIterator[LockService]:
    pool = build_pool(shared_redis_url, timeout_s=0.5)
    redis = RedisService(pool, RedisTarget(shared_redis_url, False, False), prefix=redis_prefix)
    db = Database.connect(database_url)
    try:
        yield LockService(redis, db, Metrics())
    finally:
        await redis.close()
        await db.dispose()


async def spawn(mode: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.security.lock_worker",
        mode,
        *args,
        cwd=str(REPO_ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_for(predicate_path: Path, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate_path.exists():
            await asyncio.sleep(0.02)


async def finish(process: asyncio.subprocess.Process, timeout_s: float = 90.0) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return stdout.decode()


async def test_twenty_attempts_from_four_processes_hold_the_lock_one_at_a_time(
    shared_redis_url: str,
    redis_url: str,
    redis_prefix: str,
    database_url: str,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    key = f"lock:test:{{{secrets.token_hex(6)}}}"
    (tmp_path / "counter").write_text("0")
    common = [
        "--redis-url",
        shared_redis_url,
        "--prefix",
        redis_prefix,
        "--db-url",
        database_url,
        "--key",
        key,
        "--work",
        str(tmp_path),
        "--tasks",
        str(TASKS_EACH),
    ]
    processes = [await spawn("contend", *common) for _ in range(PROCESSES)]
    try:
        async with asyncio.timeout(90):
            while len(list(tmp_path.glob("ready-*"))) < PROCESSES:
                for process in processes:
                    if process.returncode is not None:
                        await finish(process)  # fails with the worker's stderr
                        raise AssertionError("a worker exited before the start")
                await asyncio.sleep(0.05)
        (tmp_path / "go").touch()  # all 20 attempts start together
        for process in processes:
            await finish(process)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert not [line for line in lines if line.get("overlap")]
    assert len(lines) == PROCESSES * TASKS_EACH
    assert int((tmp_path / "counter").read_text()) == PROCESSES * TASKS_EACH
    assert len({line["pid"] for line in lines}) == PROCESSES
    assert all(line["allowed"] for line in lines)
    expected = "redis" if shared_redis_url == redis_url else "database"
    assert {line["backend"] for line in lines} == {expected}
    # Holders came one after another, each with a higher fencing number.
    fences = [line["fence"] for line in sorted(lines, key=lambda line: line["entered"])]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)


async def test_holder_in_another_process_whose_lease_lapsed_cannot_write(
    service: LockService,
    shared_redis_url: str,
    redis_prefix: str,
    database_url: str,
    database: Database,
    tmp_path: Path,
) -> None:
    key = f"lock:pdf-gen:{{{secrets.token_hex(6)}}}"
    process = await spawn(
        "stale",
        "--redis-url",
        shared_redis_url,
        "--prefix",
        redis_prefix,
        "--db-url",
        database_url,
        "--key",
        key,
        "--work",
        str(tmp_path),
    )
    try:
        await wait_for(tmp_path / "stale-acquired")
        stale_fence = int((tmp_path / "stale-acquired").read_text())
        await asyncio.sleep(0.4)  # its 200 ms lease lapses, nobody renews it
        newer = await service.acquire(key, 5_000)
        assert newer is not None and newer.fence > stale_fence
        async with database.sessions() as session, session.begin():
            assert await service.fence_allows(session, key, newer.fence) is True
        (tmp_path / "stale-go").touch()
        result = json.loads((await finish(process)).strip().splitlines()[-1])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert result == {"fence": stale_fence, "allowed": False, "released": False}
    assert await service.holder(key) == newer.token
