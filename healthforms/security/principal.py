"""Who is calling: the signed-in staff member, as the session check established it.

The session layer (http/sessions.py) puts a Principal on the request's state
(security/context.py); routes ask for it through the dependencies there, so no route
reads cookies or Redis itself. Organisation scoping starts here: every query for
organisation data filters on `principal.organization_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a staff member may do: admins manage users, editors build forms, viewers read."""

    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


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
