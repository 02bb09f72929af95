"""create_app(settings): the ASGI application, its middleware and its lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from healthforms.audit.routes import router as audit_router
from healthforms.config import Settings, load_settings
from healthforms.db.engine import Database
from healthforms.errors import install_error_handlers
from healthforms.forms.routes import router as forms_router
from healthforms.health.metrics import Metrics
from healthforms.health.routes import package_version
from healthforms.health.routes import router as health_router
from healthforms.http.client_ip import parse_networks
from healthforms.http.middleware import EdgeMiddleware
from healthforms.identity.routes import router as identity_router
from healthforms.logs import configure_logging
from healthforms.redis.client import RedisService, RedisTarget, build_pool, redact_url
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.responses.routes import router as responses_router
from healthforms.security.keys import KeyRing
from healthforms.security.locks import register_lock_service
from healthforms.security.middleware import SessionMiddleware
from healthforms.security.ratelimit import install_ratelimiter
from healthforms.security.ratelimit_middleware import RateLimitMiddleware
from healthforms.state import AppState
from healthforms.submissions.routes import router as public_forms_router
from healthforms.web.routes import router as web_router

log = structlog.get_logger("healthforms.app")

EMBEDDED_WARNING = (
    "EMBEDDED MODE: running a private Valkey/Redis child process and SQLite under %s. "
    "This is for ONE machine only (a laptop or a single-clinic box); for several "
    "instances configure REDIS_URL and DATABASE_URL (PostgreSQL)."
)


def build_redis(settings: Settings, url: str, *, embedded: bool) -> RedisService:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    pool = build_pool(
        url,
        password=password,
        username=settings.redis_username,
        ca_file=settings.redis_ca_file,
        max_connections=settings.redis_pool_size,
        timeout_s=settings.redis_timeout_s,
    )
    target = RedisTarget(url=redact_url(url), tls=url.startswith("rediss://"), embedded=embedded)
    return RedisService(pool, target, prefix=settings.redis_prefix)


def start_embedded_redis(settings: Settings) -> EmbeddedRedis:
    log.warning("embedded_mode", message=EMBEDDED_WARNING % settings.data_dir.resolve())
    return EmbeddedRedis.start(
        Path(settings.data_dir) / "redis",
        binary=settings.redis_server_bin,
        use_unix_socket=True,
    )


class HealthformsApp(FastAPI):
    """FastAPI behind our own ASGI layers: edge -> rate limits -> session -> FastAPI.

    add_middleware() would put them inside FastAPI's own stack (error, telemetry and
    body-limit middlewares, then the app), which every request would cross first.
    In front, a request the session layer answers itself (security/hot_routes.py)
    never enters the framework. Exceptions that escape a route reach FastAPI's
    ServerErrorMiddleware first (our Exception handler answers, 503 for a lost
    database), then the edge layer, which logs them once.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette sets; our layers read app.state.hf
        await self.front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The FastAPI application proper: the innermost of our layers calls this."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings come from the environment unless given (tests give them)."""
    settings = settings or load_settings()
    settings.check_production()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedRedis | None = None
        url = settings.explicit_redis_url()
        if url is None:
            embedded = start_embedded_redis(settings)
            url = embedded.url
        db_url = settings.resolved_database_url()
        if settings.database_url is None:
            from healthforms.db.migrate import upgrade_in_thread

            upgrade_in_thread(db_url)
        db = Database.connect(db_url)
        redis = build_redis(settings, url, embedded=embedded is not None)
        state = AppState(
            settings=settings,
            db=db,
            redis=redis,
            metrics=metrics,
            keys=KeyRing.from_settings(settings),
        )
        metrics.watch_redis(lambda: (redis.available, redis.pool_stats(), redis.mux.stats()))
        app.state.hf = state
        await redis.ping()
        redis.start_probe()
        for hook in app.state.startup_hooks:
            await hook(state)
        if app.state.freeze_gc:
            # Everything built so far (modules, routes, pools: about a million objects)
            # lives as long as the process: move it out of the collector's sight.
            # Otherwise every full collection walks it and stalls all requests for
            # ~90 ms (bench/http.py: p99 at 50 connections 94 ms -> 11 ms).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await redis.close()
            await db.dispose()
            if embedded is not None:
                embedded.stop()

    app = HealthformsApp(
        title="healthforms",
        version=package_version(),
        lifespan=lifespan,
        # Swagger UI loads from a CDN; PHI pages never call third parties.
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks read the environment on every request
        # (about 8% of the authenticated hot path in bench/http.py's profile).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.startup_hooks = []
    app.state.freeze_gc = False
    app.state.startup_hooks.append(register_lock_service)
    install_error_handlers(app)
    app.state.startup_hooks.append(install_ratelimiter)
    app.include_router(health_router)
    app.include_router(identity_router)
    app.include_router(audit_router)
    app.include_router(forms_router)
    app.include_router(public_forms_router)
    app.include_router(responses_router)
    app.include_router(web_router)

    # Outermost first: the edge resolves the request id and client IP the others need.
    app.front = EdgeMiddleware(
        RateLimitMiddleware(SessionMiddleware(app.framework, settings=settings, metrics=metrics)),
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=parse_networks(settings.trusted_proxies),
        proxy_hops=settings.trusted_proxy_hops,
        production=settings.is_production,
    )
    return app


def create_served_app() -> FastAPI:
    """The app `healthforms serve` runs: create_app() that freezes its start-up heap."""
    app = create_app()
    app.state.freeze_gc = True
    return app
