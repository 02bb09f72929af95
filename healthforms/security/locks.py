"""PROVISIONAL STAND-IN for the locks feature (feat/locks), written by feat/responses.

On merge: take feat/locks's version of this file whole. This one only exists so the
PDF generation of feat/responses runs and is tested against the agreed interface:
`PDF_LOCK_KEY`, `PDF_LOCK_TTL_MS`, `LockBusy`, `LockServiceDep`,
`locks.hold(key, ttl_ms, kind=...)` yielding a lock with `.fence`, and
`await locks.fence_allows(session, resource, fence)`.
It is a real Redis lock (SET NX PX, compare-then-delete, INCR fencing number, database
fence check) but has no lease renewal, no degraded mode and no metrics.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from redis.exceptions import WatchError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.redis.client import RedisService
from healthforms.security.fencing import LockFence
from healthforms.state import StateDep

PDF_LOCK_KEY = "lock:pdf-gen:{{{response_id}}}"  # braces: a Cluster hash tag
PDF_LOCK_TTL_MS = 5 * 60 * 1000
FENCE_TTL_S = 30 * 24 * 3600


class LockBusy(Exception):
    """Another holder has the lock."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class HeldLock:
    key: str
    token: str
    fence: int


class LockService:
    def __init__(self, redis: RedisService) -> None:
        self.redis = redis

    @asynccontextmanager
    async def hold(self, key: str, ttl_ms: int, *, kind: str) -> AsyncIterator[HeldLock]:
        full = self.redis.key(key)
        fence_key = self.redis.key(key.replace("lock:", "fence:", 1))
        token = secrets.token_hex(16)

        async def acquire(r: Redis) -> int | None:
            if not await r.set(full, token, nx=True, px=ttl_ms):
                return None
            async with r.pipeline(transaction=True) as pipe:
                pipe.incr(fence_key)
                pipe.expire(fence_key, FENCE_TTL_S)
                fence, _ = await pipe.execute()
            return int(fence)

        fence = await self.redis.call(acquire)
        if fence is None:
            raise LockBusy(kind)
        try:
            yield HeldLock(key=full, token=token, fence=fence)
        finally:

            async def release(r: Redis) -> None:
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(full)
                        if await pipe.get(full) == token.encode():
                            pipe.multi()  # type: ignore[no-untyped-call]
                            pipe.delete(full)
                            await pipe.execute()
                    except WatchError:
                        return

            await self.redis.call(release)

    async def fence_allows(self, session: AsyncSession, resource: str, fence: int) -> bool:
        """Record `fence` for `resource` unless a higher one already wrote; say which."""
        row = (
            await session.execute(
                select(LockFence).where(LockFence.resource == resource).with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            session.add(LockFence(resource=resource, fence=fence))
            await session.flush()
            return True
        if row.fence > fence:
            return False
        row.fence = fence
        await session.flush()
        return True


def get_lock_service(state: StateDep) -> LockService:
    service = state.services.get("locks")
    if not isinstance(service, LockService):
        service = LockService(state.redis)
        state.services["locks"] = service
    return service


LockServiceDep = Annotated[LockService, Depends(get_lock_service)]
