"""create_app(settings): the ASGI application, its middleware and its lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from healthforms.alerts.routes import router as alerts_router
from healthforms.alerts.service import outbox_handlers
from healthforms.audit.batch import close_appender
from healthforms.audit.checkpoints import CheckpointWriter
from healthforms.audit.routes import router as audit_router
from healthforms.branding.routes import router as branding_router
from healthforms.config import Settings, load_settings
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.db.migrate import upgrade_in_thread
from healthforms.errors import ServiceUnavailable
from healthforms.exports.routes import router as exports_router
from healthforms.exports.service import sweep_export_workspace
from healthforms.fhir.response import webhook_body_source
from healthforms.fhir.routes import router as fhir_router
from healthforms.forms.routes import router as forms_router
from healthforms.forms.routes import templates_router as form_templates_router
from healthforms.health.routes import package_version
from healthforms.health.routes import router as health_router
from healthforms.http.answers import send_error
from healthforms.http.errors import install_error_handlers
from healthforms.http.pipeline import build_pipeline
from healthforms.identity.routes import router as identity_router
from healthforms.identity.service import user_standing
from healthforms.logs import configure_logging
from healthforms.metrics import Metrics
from healthforms.outbox.worker import OutboxWorker
from healthforms.patient_requests.notify import request_handlers
from healthforms.patient_requests.public_routes import router as public_requests_router
from healthforms.patient_requests.routes import router as requests_router
from healthforms.pdf.routes import router as pdf_router
from healthforms.redis.client import build_redis
from healthforms.redis.embedded import DataDirRedis, open_embedded_redis
from healthforms.responses.routes import router as responses_router
from healthforms.retention.job import PurgeJob
from healthforms.state import STATE_ATTRIBUTE, AppState
from healthforms.submissions.drafts.mail import draft_handlers
from healthforms.submissions.drafts.routes import router as drafts_router
from healthforms.submissions.routes import router as public_forms_router
from healthforms.uploads.routes import router as uploads_router
from healthforms.web.pages import error_page, static_error_html
from healthforms.web.patient_page import router as patient_page_router
from healthforms.web.routes import router as web_router
from healthforms.webhooks.dispatcher import WebhookDispatcher
from healthforms.webhooks.pages import router as webhook_pages_router
from healthforms.webhooks.routes import router as webhooks_router
from healthforms.webhooks.service import fan_out as webhook_fan_out

log = structlog.get_logger("healthforms.app")


class HealthformsApp(FastAPI):
    """FastAPI behind our own ASGI layers (http/pipeline.py): edge -> rate limits ->
    sessions -> FastAPI.

    add_middleware() would put them inside FastAPI's own stack (error, telemetry and
    body-limit middlewares, then the app), which every request would cross first.
    In front, a request the session layer answers itself (http/hot_routes.py) never
    enters the framework. Exceptions that escape a route reach FastAPI's
    ServerErrorMiddleware first (our Exception handler answers, 503 for a lost
    database), then the edge layer, which logs them once. The pipeline is built in the
    lifespan, with the AppState it serves; until then HTTP requests are refused.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.front is None:  # not started (or already stopped)
            await send_error(send, ServiceUnavailable())
            return
        scope["app"] = self  # what Starlette sets; FastAPI's dependencies read it
        await self.front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The FastAPI application proper: the innermost of our layers calls this."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings come from the environment unless given (tests give them)."""
    settings = settings or load_settings()
    settings.check_production()
    configure_logging(settings.log_level)
    for warning in settings.startup_warnings():
        log.warning(warning.event, message=warning.message)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert isinstance(app, HealthformsApp)
        embedded: DataDirRedis | None = None
        url = settings.explicit_redis_url()
        if url is None:
            # Owned here, or shared with the process that runs it (`serve`'s parent).
            embedded = open_embedded_redis(settings)
            embedded.supervise()
            url = embedded.url
        db_url = settings.resolved_database_url()
        if settings.database_url is None:
            upgrade_in_thread(db_url)
        db = Database.connect(db_url)
        redis = build_redis(settings, url, embedded=embedded is not None)
        state = AppState.build(
            settings=settings,
            db=db,
            redis=redis,
            metrics=metrics,
            keys=KeyRing.from_settings(settings),
            user_standing=partial(user_standing, db),
        )
        metrics.watch_redis(lambda: (redis.available, redis.pool_stats(), redis.mux.stats()))
        setattr(app.state, STATE_ATTRIBUTE, state)
        await redis.ping()
        redis.start_probe()
        await state.limiter.load_script()
        checkpoints = CheckpointWriter(
            db,
            state.keys,
            settings.resolved_audit_checkpoint_path(),
            settings.audit_checkpoint_interval_s,
        )
        checkpoints.start()
        # Decrypted rows a process killed mid-export left in the data directory.
        sweep_export_workspace(settings.data_dir)
        # The daily retention purge: one process of the deployment runs each round.
        purge_job = PurgeJob(db, redis, state.keys, metrics, settings.purge_interval_s)
        purge_job.start()
        app.state.purge_job = purge_job  # its recent rounds, for inspection
        state.published_forms.start()
        outbox: OutboxWorker | None = None
        webhooks: WebhookDispatcher | None = None
        if settings.outbox_worker:
            webhooks = WebhookDispatcher(
                settings,
                db,
                state.keys,
                metrics,
                body_source=webhook_body_source(settings.public_base),
            )
            await webhooks.start()
            app.state.webhooks = webhooks  # the API wakes it (test, redeliver)
            handlers = {
                **outbox_handlers(),
                **request_handlers(state.keys),
                **draft_handlers(state.keys),
            }
            outbox = OutboxWorker(
                settings,
                db,
                redis,
                metrics,
                handlers,
                state.outbox,
                fan_outs=[webhook_fan_out],
                on_fanned_out=webhooks.signal.nudge,
            )
            outbox.start()
        app.front = build_pipeline(app.framework, state, html_error_page=static_error_html)
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
            app.front = None
            if outbox is not None:
                await outbox.stop()  # a send cut short is sent again by the next worker
            if webhooks is not None:
                await webhooks.stop()  # a call cut short is sent again after its lease
            await purge_job.stop()  # a batch in flight commits with its event
            await state.workers.close()  # kill renders still running
            await state.published_forms.close()
            await close_appender(db)  # audit events already handed over are written
            await checkpoints.stop()  # the heads as they are at exit
            await redis.close()
            await db.dispose()
            await metrics.close()  # multiprocess mode: this worker's live gauges go
            if embedded is not None:
                embedded.close()

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
    app.state.freeze_gc = False
    install_error_handlers(app, html_page=error_page)
    app.include_router(health_router)
    app.include_router(identity_router)
    app.include_router(audit_router)
    app.include_router(fhir_router)
    app.include_router(forms_router)
    app.include_router(form_templates_router)
    app.include_router(public_forms_router)
    app.include_router(drafts_router)
    app.include_router(responses_router)
    app.include_router(pdf_router)
    app.include_router(alerts_router)
    app.include_router(exports_router)
    app.include_router(requests_router)
    app.include_router(public_requests_router)
    app.include_router(branding_router)
    app.include_router(uploads_router)
    app.include_router(web_router)
    app.include_router(webhooks_router)
    app.include_router(webhook_pages_router)
    app.include_router(patient_page_router)
    return app


def create_served_app() -> FastAPI:
    """The app `healthforms serve` runs: create_app() that freezes its start-up heap."""
    app = create_app()
    app.state.freeze_gc = True
    return app
