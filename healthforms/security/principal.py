"""Who is calling: the signed-in staff member, as the session check established it.

The session hot path (security/middleware.py) puts a Principal in
`scope["state"]["principal"]`; routes ask for it through these dependencies, so no
route reads cookies or Redis itself. Organisation scoping starts here: every query
for organisation data filters on `principal.organization_id`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from healthforms.errors import Forbidden, Unauthenticated
from healthforms.identity.models import Role


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    organization_id: str
    role: Role
    session_id: str  # the short public id of the session (never the secret id)
    auth_method: str = "password"  # password | oidc
    mfa: bool = False
    degraded: bool = False  # established from the signed cookie alone (Redis down)

    @property
    def can_edit(self) -> bool:
        return self.role in (Role.ADMIN, Role.EDITOR)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def get_principal(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise Unauthenticated()
    return principal


def require_roles(*roles: Role) -> Callable[[Request], Principal]:
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = get_principal(request)
        if principal.role not in allowed:
            raise Forbidden()
        return principal

    return dependency


# The dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop on every authenticated request.
async def _current_principal(request: Request) -> Principal:
    return get_principal(request)


def _roles_dependency(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    check = require_roles(*roles)

    async def dependency(request: Request) -> Principal:
        return check(request)

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(_current_principal)]
EditorPrincipal = Annotated[Principal, Depends(_roles_dependency(Role.ADMIN, Role.EDITOR))]
AdminPrincipal = Annotated[Principal, Depends(_roles_dependency(Role.ADMIN))]
