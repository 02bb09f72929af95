"""What the Redis client tests share."""

from __future__ import annotations

from healthforms.redis.client import RedisService, RedisTarget, build_pool, redact_url


def service_for(url: str, **pool_args: object) -> RedisService:
    """A RedisService of the test's own on `url` (pool arguments as build_pool takes them)."""
    pool = build_pool(url, **pool_args)  # type: ignore[arg-type]
    return RedisService(pool, RedisTarget(url=redact_url(url), tls=False, embedded=False))
