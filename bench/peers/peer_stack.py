"""The stack people assemble instead: FastAPI + Starlette SessionMiddleware + slowapi.

A signed-cookie session (itsdangerous), a slowapi limit per signed-in user stored in the
same Redis (limits' Redis storage, fixed window), and an authenticated GET, so the
benchmark compares it with our authenticated GET on the same server and Redis.

    uvicorn --factory bench.peers.peer_stack:create_app   (BENCH_REDIS_URL)

POST /login {"userId": "..."} signs in; GET /api/me answers the user or 401.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from starlette.middleware.sessions import SessionMiddleware

# High enough never to refuse: the benchmark measures the limiter's cost, not its refusals.
LIMIT = os.environ.get("BENCH_PEER_LIMIT", "1000000/second")


def _user_key(request: Request) -> str:
    user_id = request.session.get("user_id")
    if user_id:
        return str(user_id)
    return request.client.host if request.client else "-"


def create_app() -> FastAPI:
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    limiter = Limiter(key_func=_user_key, storage_uri=redis_url, headers_enabled=True)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(
        SessionMiddleware,
        secret_key=os.environ.get("BENCH_PEER_SECRET", "peer-stack-secret-not-for-production"),
        max_age=5 * 24 * 3600,
        same_site="lax",
        https_only=False,
    )

    @app.post("/login")
    async def login(request: Request) -> dict[str, Any]:
        body = await request.json()
        request.session["user_id"] = str(body["userId"])
        request.session["role"] = "admin"
        return {"user": {"id": body["userId"]}}

    @app.get("/api/me", response_model=None)
    @limiter.limit(LIMIT)
    async def me(request: Request, response: Response) -> dict[str, Any] | JSONResponse:
        user_id = request.session.get("user_id")
        if not user_id:
            return JSONResponse({"error": "Sign in", "code": "unauthenticated"}, status_code=401)
        return {"user": {"id": user_id, "role": request.session.get("role")}}

    return app
