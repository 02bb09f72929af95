"""Identity's HTTP API (API.md "Authentication", "Users"), one module per resource."""

from __future__ import annotations

from fastapi import APIRouter

from healthforms.identity.routes import account, sessions, users

router = APIRouter(tags=["identity"])
router.include_router(sessions.router)
router.include_router(account.router)
router.include_router(users.router)
