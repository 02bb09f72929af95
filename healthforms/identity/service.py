"""Users and organisations, with organisation scoping done in ONE place.

`OrgScope` is the only way routes read organisation data: every query it builds filters
on the caller's organisation, and an object of another organisation is reported exactly
like a missing one (404 not_found). Other features can use it too:

    scope: OrgScopeDep
    form = await scope.get(Form, form_id)            # 404 unless it is the caller's
    rows = await scope.all(scope.select(Form))       # only the caller's rows
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

import structlog
from fastapi import Depends
from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import utcnow
from healthforms.db.engine import Database
from healthforms.errors import Conflict, HealthformsError, NotFound, Unauthenticated
from healthforms.identity.models import (
    Organization,
    SessionRevocation,
    TotpRecoveryCode,
    User,
)
from healthforms.identity.passwords import hash_password_async
from healthforms.identity.schemas import normalise_email
from healthforms.redis.errors import RedisUnavailable
from healthforms.security.context import CurrentPrincipal
from healthforms.security.principal import Principal, Role
from healthforms.security.sessions import UserStanding
from healthforms.state import AppState, DbSessionDep

log = structlog.get_logger("healthforms.identity")

M = TypeVar("M")


class EmailTaken(Conflict):
    """Only ever about the caller's own organisation: emails are unique per organisation,
    so another clinic's accounts cannot be probed through this answer."""

    code, message = "email_taken", "A user with this email already exists in your organisation."


class ReauthenticationRequired(HealthformsError):
    status_code, code = 403, "reauthentication_required"
    message = "Change your own password on your account page; it asks for the current one."


class CannotChangeSelf(Conflict):
    code, message = "cannot_change_self", "You cannot disable yourself or change your own role."


class OrgScope:
    """Queries of organisation data, always filtered on the caller's organisation."""

    def __init__(self, db: AsyncSession, principal: Principal) -> None:
        self.db = db
        self.principal = principal
        self.organization_id = principal.organization_id

    def select(self, model: type[M]) -> Select[M]:
        column = model.organization_id  # type: ignore[attr-defined]
        return select(model).where(column == self.organization_id)

    async def all(self, query: Select[M]) -> Sequence[M]:
        return (await self.db.execute(query)).scalars().all()

    async def get(self, model: type[M], object_id: str) -> M:
        """The caller's object with this id; NotFound for a missing or foreign one."""
        row = (
            await self.db.execute(
                self.select(model).where(model.id == object_id)  # type: ignore[attr-defined]
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound()
        return row


async def get_org_scope(db: DbSessionDep, principal: CurrentPrincipal) -> OrgScope:
    return OrgScope(db, principal)


OrgScopeDep = Annotated[OrgScope, Depends(get_org_scope)]


@dataclass(frozen=True, slots=True)
class UserChange:
    user: User
    end_sessions: bool  # disabled, password or role changed: every session must end
    disabled_now: bool


async def find_users_by_email(db: AsyncSession, email: str, *, limit: int) -> list[User]:
    """Sign-in lookup (no caller yet, so no organisation to scope by): the accounts with
    this email, one per organisation at most, oldest first, at most `limit`."""
    return list(
        (
            await db.execute(
                select(User)
                .where(User.email == normalise_email(email))
                .order_by(User.created_at, User.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )


async def organization_names(db: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    rows = await db.execute(
        select(Organization.id, Organization.name).where(Organization.id.in_(ids))
    )
    return {str(row.id): str(row.name) for row in rows}


async def get_user(db: AsyncSession, user_id: str) -> User | None:
    return await db.get(User, user_id)


async def current_user(db: AsyncSession, principal: Principal) -> User:
    """The signed-in user's row; 401 once they are disabled or moved to another clinic."""
    user = await get_user(db, principal.user_id)
    if user is None or user.disabled or user.organization_id != principal.organization_id:
        raise Unauthenticated()
    return user


async def list_users(scope: OrgScope) -> Sequence[User]:
    return await scope.all(scope.select(User).order_by(User.created_at, User.id))


async def create_user(
    db: AsyncSession,
    *,
    organization_id: str,
    email: str,
    name: str,
    password: str | None,
    role: Role,
) -> User:
    user = User(
        organization_id=organization_id,
        email=normalise_email(email),
        name=name.strip(),
        role=role.value,
        password_hash=await hash_password_async(password) if password else None,
    )
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise EmailTaken() from None
    return user


async def create_user_in_scope(
    scope: OrgScope, *, email: str, name: str, password: str, role: Role
) -> User:
    return await create_user(
        scope.db,
        organization_id=scope.organization_id,
        email=email,
        name=name,
        password=password,
        role=role,
    )


async def update_user(
    scope: OrgScope,
    user_id: str,
    *,
    role: Role | None = None,
    disabled: bool | None = None,
    name: str | None = None,
    password: str | None = None,
) -> UserChange:
    user = await scope.get(User, user_id)
    is_self = user.id == scope.principal.user_id
    if is_self and (disabled is True or (role is not None and role.value != user.role)):
        # An admin locking themselves out leaves the clinic without anyone to undo it.
        raise CannotChangeSelf()
    if is_self and password is not None:
        # Someone holding an admin's session (an unlocked screen, a stolen cookie) must
        # not take the account over: one's own password changes only with the old one.
        raise ReauthenticationRequired()
    end_sessions = False
    disabled_now = False
    if role is not None and role.value != user.role:
        user.role = role.value
        end_sessions = True  # the role travels in the signed cookie: re-issue it
    if disabled is not None and disabled != user.disabled:
        user.disabled = disabled
        if disabled:
            end_sessions = disabled_now = True
    if name is not None:
        user.name = name.strip()
    if password is not None:
        user.password_hash = await hash_password_async(password)
        end_sessions = True
    if end_sessions:
        # Also refuses these sessions' cookies while Redis is down (degraded mode).
        user.sessions_valid_after = utcnow()
    await scope.db.commit()
    return UserChange(user=user, end_sessions=end_sessions, disabled_now=disabled_now)


def _admin_target_check(scope: OrgScope, user: User) -> None:
    if user.id == scope.principal.user_id:
        # An admin's own password and two-step change on the account page, with the
        # current password: a held admin session must not take its own account over.
        raise ReauthenticationRequired()


async def reset_password(db: AsyncSession, user: User, password: str) -> None:
    """Set a new password (recovery: no old one asked) and void every session of the
    user in the database, in one commit; the caller ends them in Redis too."""
    user.password_hash = await hash_password_async(password)
    user.sessions_valid_after = utcnow()
    await db.commit()


async def reset_totp(db: AsyncSession, user: User) -> None:
    """Remove two-step sign-in (secret and recovery codes) and void every session."""
    clear_totp(user)
    await db.execute(delete(TotpRecoveryCode).where(TotpRecoveryCode.user_id == user.id))
    user.sessions_valid_after = utcnow()
    await db.commit()


async def reset_password_in_scope(scope: OrgScope, user_id: str, password: str) -> User:
    """An admin's reset of another user of their organisation (404 for anyone else's)."""
    user = await scope.get(User, user_id)
    _admin_target_check(scope, user)
    await reset_password(scope.db, user, password)
    return user


async def reset_totp_in_scope(scope: OrgScope, user_id: str) -> User:
    user = await scope.get(User, user_id)
    _admin_target_check(scope, user)
    await reset_totp(scope.db, user)
    return user


def clear_totp(user: User) -> None:
    user.totp_enabled = False
    user.totp_secret_encrypted = None


async def replace_recovery_codes(db: AsyncSession, user_id: str, hashes: Sequence[str]) -> None:
    """The user's recovery codes become exactly these (the caller commits)."""
    await db.execute(delete(TotpRecoveryCode).where(TotpRecoveryCode.user_id == user_id))
    db.add_all(TotpRecoveryCode(code_hash=h, user_id=user_id) for h in hashes)


async def delete_recovery_codes(db: AsyncSession, user_id: str) -> None:
    await db.execute(delete(TotpRecoveryCode).where(TotpRecoveryCode.user_id == user_id))


async def use_recovery_code(db: AsyncSession, user_id: str, code_hash: str) -> bool:
    """Consume one recovery code; whether it was there. The DELETE is the single-use
    check: of two sign-ins racing with the same code, the database lets one delete it."""
    result = await db.execute(
        delete(TotpRecoveryCode)
        .where(TotpRecoveryCode.user_id == user_id)
        .where(TotpRecoveryCode.code_hash == code_hash)
    )
    await db.commit()
    return bool(getattr(result, "rowcount", 0) == 1)


async def recovery_codes_left(db: AsyncSession, user_id: str) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(TotpRecoveryCode)
        .where(TotpRecoveryCode.user_id == user_id)
    )
    return int(count or 0)


async def end_sessions_now(state: AppState, user_id: str) -> int | None:
    """End every session of a user in Redis, after the database voided them
    (`sessions_valid_after`); how many were live, or None while Redis is down (the
    database's record refuses them meanwhile, and once Redis is back)."""
    state.standings.forget(user_id)
    try:
        return await state.sessions.end_all(user_id)
    except RedisUnavailable:
        log.error("revoke_sessions_degraded", user_id=user_id)
        return None


async def revoke_all_sessions_in_db(db: AsyncSession, user: User) -> None:
    """Mark every earlier session void for the degraded mode (sign out everywhere)."""
    user.sessions_valid_after = utcnow()
    await db.commit()


async def get_or_create_organization(db: AsyncSession, name: str) -> tuple[Organization, bool]:
    name = name.strip()
    org = (
        await db.execute(select(Organization).where(Organization.name == name))
    ).scalar_one_or_none()
    if org is not None:
        return org, False
    org = Organization(name=name)
    db.add(org)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        org = (await db.execute(select(Organization).where(Organization.name == name))).scalar_one()
        return org, False
    return org, True


async def user_standing(db: Database, user_id: str) -> UserStanding | None:
    """The database's word on a user's sessions (disabled? every session void before
    when? which single sessions ended?); None when there is no such user."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(User.disabled, User.sessions_valid_after).where(User.id == user_id)
            )
        ).first()
        if row is None:
            return None
        revoked = (
            await session.execute(
                select(SessionRevocation.session_hash)
                .where(SessionRevocation.user_id == user_id)
                .where(SessionRevocation.expires_at > utcnow())
            )
        ).scalars()
        disabled, valid_after = row
        return UserStanding(
            disabled=bool(disabled),
            sessions_valid_after_ms=(
                int(valid_after.timestamp() * 1000) if valid_after is not None else None
            ),
            revoked=frozenset(revoked),
        )


async def revoke_session_in_db(
    db: AsyncSession, user_id: str, session_hash: str, *, lifetime_s: int
) -> None:
    """Record that one session ended (logout, revoke), beside ending it in Redis.

    Kept until the session's absolute lifetime has passed, counted from now (an upper
    bound of its real end); expired records are pruned on the way.
    """
    now = utcnow()
    await db.execute(delete(SessionRevocation).where(SessionRevocation.expires_at <= now))
    exists = await db.get(SessionRevocation, session_hash)
    if exists is None:
        db.add(
            SessionRevocation(
                session_hash=session_hash,
                user_id=user_id,
                expires_at=now + timedelta(seconds=lifetime_s),
            )
        )
    try:
        await db.commit()
    except IntegrityError:  # ended twice at once: one record is enough
        await db.rollback()
