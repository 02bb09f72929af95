"""The form edit lock (`lock:form-edit:{form_id}`, 2 min, renewable) on top of LockService.

The lock token is the holder's user id, so "who holds it" is one GET and the holder
re-entering (renewing, saving) keeps its fencing number. A save by the holder is
fenced in the database: if its lease lapsed and a newer holder saved since, the
save is refused instead of overwriting the newer edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.clock import rfc3339, utcnow
from healthforms.errors import Conflict
from healthforms.forms.service import FenceCheck
from healthforms.identity.models import User
from healthforms.security.locks import (
    FORM_EDIT_LOCK_KEY,
    FORM_EDIT_LOCK_TTL_MS,
    HeldLock,
    LockService,
)
from healthforms.security.principal import Principal

LOCK_KIND = "form-edit"


class FormLocked(Conflict):
    code = "locked"
    message = "Another user is editing this form."


@dataclass(frozen=True, slots=True)
class LockOwner:
    user_id: str
    name: str

    def json(self) -> dict[str, str]:
        return {"id": self.user_id, "name": self.name}


@dataclass(frozen=True, slots=True)
class SaveGuard:
    """What a save needs from the lock: its fencing number and the in-transaction check."""

    fence: int | None
    check: FenceCheck | None


def lock_key(form_id: str) -> str:
    return FORM_EDIT_LOCK_KEY.format(form_id=form_id)


class FormEditLocks:
    def __init__(self, locks: LockService, session: AsyncSession, principal: Principal) -> None:
        self.locks = locks
        self.session = session
        self.principal = principal

    async def owner(self, user_id: str) -> LockOwner:
        """The holder's id and staff name (names of staff are not PHI)."""
        query = select(User.name).where(
            User.id == user_id, User.organization_id == self.principal.organization_id
        )
        name = (await self.session.execute(query)).scalar_one_or_none()
        return LockOwner(user_id, name or "")

    async def _locked(self, holder: str | None) -> FormLocked:
        owner = await self.owner(holder) if holder else LockOwner("", "")
        return FormLocked(extra={"lockedBy": owner.json()})

    async def locked_error(self, form_id: str) -> FormLocked:
        """The 409 `locked` error naming the current holder (if any)."""
        return await self._locked(await self.locks.holder(lock_key(form_id)))

    async def acquire(self, form_id: str) -> tuple[LockOwner, datetime]:
        """Take or renew the lock for the caller; raise FormLocked while another holds it."""
        key = lock_key(form_id)
        held = await self.locks.acquire(
            key, FORM_EDIT_LOCK_TTL_MS, token=self.principal.user_id, kind=LOCK_KIND
        )
        if held is None:
            raise await self._locked(await self.locks.holder(key))
        remaining = await self.locks.pttl(key)
        expires = utcnow() + timedelta(milliseconds=remaining or held.ttl_ms)
        return await self.owner(self.principal.user_id), expires

    async def release(self, form_id: str) -> None:
        """Release the caller's lock (nothing to do when free); FormLocked if another holds it."""
        key = lock_key(form_id)
        holder = await self.locks.holder(key)
        if holder is None:
            return
        if holder != self.principal.user_id:
            raise await self._locked(holder)
        # Re-enter to get the lock as held (its backend and fence), then release it.
        held = await self.locks.acquire(
            key, FORM_EDIT_LOCK_TTL_MS, token=self.principal.user_id, kind=LOCK_KIND
        )
        if held is None:
            raise await self._locked(await self.locks.holder(key))
        await self.locks.release(held)

    async def guard_save(self, form_id: str) -> SaveGuard:
        """Refuse a save while another user holds the lock; fence the holder's own save."""
        key = lock_key(form_id)
        # One round trip: renew our own lock (same fence) or learn who holds it.
        held, holder = await self.locks.reenter(
            key, FORM_EDIT_LOCK_TTL_MS, self.principal.user_id, kind=LOCK_KIND
        )
        if held is not None:
            return fenced(self.locks, held)
        if holder is None:
            return SaveGuard(fence=None, check=None)
        raise await self._locked(holder)


def fenced(locks: LockService, held: HeldLock) -> SaveGuard:
    async def check(session: AsyncSession) -> bool:
        return await locks.fence_allows(session, held.key, held.fence)

    return SaveGuard(fence=held.fence, check=check)


def lock_json(owner: LockOwner, expires_at: datetime) -> dict[str, Any]:
    return {"lockedBy": owner.json(), "expiresAt": rfc3339(expires_at)}
