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


StateDep = Annotated[AppState, Depends(get_state)]


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


RequestContextDep = Annotated[RequestContext, Depends(request_context)]
