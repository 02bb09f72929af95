"""The one request pipeline: edge -> rate limits -> sessions -> FastAPI.

Read as data, a request crosses these layers in this order and they share one typed
RequestState (security/context.py):

1. EdgeMiddleware (edge.py): request id, client IP, the RequestState itself, body
   limit, security headers, the log line and metrics; the last line of defence for
   errors (503 for a lost database, else 500).
2. RateLimitMiddleware (ratelimits.py): the `auth` and `public` path policies, the
   deferred `public` token of a submission, RateLimit headers on every /api answer.
3. SessionMiddleware (sessions.py): the one-round-trip session + `api` token + CSRF
   check; the principal and session on the RequestState; hot routes (hot_routes.py)
   answered here; the degraded judgement while Redis is down.
4. FastAPI: routing, dependencies (security/context.py, state.py), the features'
   routes, and the exception handlers of errors.py.

Each layer is plain ASGI and is handed the AppState when the lifespan builds the
pipeline, so nothing looks services up per request.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from healthforms.http.client_ip import parse_networks
from healthforms.http.edge import EdgeMiddleware
from healthforms.http.ratelimits import RateLimitMiddleware
from healthforms.http.sessions import SessionMiddleware
from healthforms.state import AppState


def build_pipeline(
    framework: ASGIApp, state: AppState, *, html_error_page: Callable[[int], str]
) -> ASGIApp:
    """Our layers around `framework` (the FastAPI app proper), outermost first."""
    settings = state.settings
    return EdgeMiddleware(
        RateLimitMiddleware(SessionMiddleware(framework, state), state),
        metrics=state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=parse_networks(settings.trusted_proxies),
        proxy_hops=settings.trusted_proxy_hops,
        production=settings.is_production,
        html_error_page=html_error_page,
    )
