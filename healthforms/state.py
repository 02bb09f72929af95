"""What one running app holds, built in one place, and the dependencies that hand it to routes.

`AppState.build` is called once, in the lifespan (app.py): every long-lived service is a
typed field here, made there, and nowhere else. Routes reach it through `StateDep`;
the ASGI layers (http/) are handed it when the lifespan builds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.config import Settings
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.outbox.store import OutboxSignal
from healthforms.processes import ChildProcesses
from healthforms.redis.broadcast import BroadcastCache
from healthforms.redis.client import RedisService
from healthforms.security.csrf import CsrfTokens
from healthforms.security.locks import LockService
from healthforms.security.oidc import OidcVerifier, build_oidc_verifier
from healthforms.security.ratelimit import RateLimiter
from healthforms.security.sessions import SessionStore, Standings, UserStandingLookup


@dataclass(frozen=True, slots=True, kw_only=True)
class AppState:
    settings: Settings
    db: Database
    redis: RedisService
    metrics: Metrics
    keys: KeyRing
    sessions: SessionStore
    csrf: CsrfTokens
    limiter: RateLimiter
    locks: LockService
    oidc: OidcVerifier | None  # None: no OIDC issuer configured
    # The database's word on each user's sessions (identity/ provides the lookup).
    standings: Standings
    # CPU-heavy jobs on patient input (PDF renders) in child processes killed at their
    # time limit; none starts before the first job, the lifespan closes it.
    workers: ChildProcesses
    # Published form versions by public id, kept per process and dropped everywhere when
    # one is published, unpublished or archived (submissions/ reads, forms/ invalidates).
    published_forms: BroadcastCache[object]
    # Wakes this process's outbox relay after a request committed a message.
    outbox: OutboxSignal

    @classmethod
    def build(
        cls,
        *,
        settings: Settings,
        db: Database,
        redis: RedisService,
        metrics: Metrics,
        keys: KeyRing,
        user_standing: UserStandingLookup,
    ) -> AppState:
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            metrics=metrics,
            keys=keys,
            sessions=SessionStore(redis, settings, keys.hmac_key("session")),
            csrf=CsrfTokens(redis, keys.hmac_key("csrf")),
            limiter=RateLimiter(redis, settings, metrics, log_key=keys.hmac_key("ratelimit-log")),
            locks=LockService(redis, db, metrics),
            oidc=build_oidc_verifier(settings),
            standings=Standings(user_standing),
            workers=ChildProcesses(settings.pdf_render_processes),
            published_forms=BroadcastCache(redis, "published-forms"),
            outbox=OutboxSignal(),
        )


STATE_ATTRIBUTE = "hf"  # app.state.hf


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(state, AppState):  # pragma: no cover - a request before start-up
        raise RuntimeError("the app has not started (no AppState)")
    return state


# async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
async def _state_dependency(request: Request) -> AppState:
    return get_state(request)


StateDep = Annotated[AppState, Depends(_state_dependency)]


async def get_db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.db.sessions() as session:
        yield session


DbSessionDep = Annotated[AsyncSession, Depends(get_db_session)]
