"""The floor apps: a bare FastAPI endpoint, and the same plus one Redis GET.

uvicorn --factory bench.peers.bare_app:create_app   (BENCH_REDIS_URL for /redis-get)
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from redis.asyncio import Redis


def create_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    redis = Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/redis-get")
    async def redis_get() -> dict[str, bool]:
        value = await redis.get("bench:bare:key")
        return {"ok": value is None or bool(value)}

    return app
