"""What one running app holds, and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import RequestContext
from healthforms.config import Settings
from healthforms.db.engine import Database
from healthforms.health.metrics import Metrics
from healthforms.redis.client import RedisService
from healthforms.security.keys import KeyRing


@dataclass
class AppState:
    settings: Settings
    db: Database
    redis: RedisService
    metrics: Metrics
    keys: KeyRing
    # Feature services register themselves here at start-up (name -> object).
    services: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.hf
    return state


async def _state_dependency(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    return get_state(request)


StateDep = Annotated[AppState, Depends(_state_dependency)]


async def get_db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.db.sessions() as session:
        yield session


DbSessionDep = Annotated[AsyncSession, Depends(get_db_session)]


def request_context(request: Request) -> RequestContext:
    """IP (proxy-aware, from the edge middleware), user agent and request id."""
    scope_state = request.scope.get("state", {})
    user_agent = request.headers.get("user-agent")
    return RequestContext(
        ip=scope_state.get("client_ip"),
        user_agent=user_agent[:256] if user_agent else None,
        request_id=scope_state.get("request_id"),
    )


async def _request_context_dependency(request: Request) -> RequestContext:
    return request_context(request)


RequestContextDep = Annotated[RequestContext, Depends(_request_context_dependency)]
