"""Request bodies and JSON shapes of the identity API (camelCase, per API.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from healthforms.identity.models import User
from healthforms.identity.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from healthforms.security.principal import Role


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "organizationId": user.organization_id,
    }


def normalise_email(value: str) -> str:
    return value.strip().lower()


def _check_email(value: str) -> str:
    value = normalise_email(value)
    local, at, domain = value.partition("@")
    if not at or not local or "." not in domain or " " in value or len(value) > 320:
        raise ValueError("not a valid email address")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_max_length=4096)


class LoginBody(_Body):
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_LENGTH)
    # A TOTP code, or a recovery code (`xxxx-xxxx-xxxx-xxxx`), also beside `idToken`.
    totp: str | None = Field(default=None, max_length=32)
    id_token: str | None = Field(default=None, alias="idToken", max_length=16384)
    # Only when the password opens accounts of several clinics (409 organization_required).
    organization_id: str | None = Field(default=None, alias="organizationId", max_length=64)


class CreateUserBody(_Body):
    email: str
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    role: Role

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return _check_email(value)


class UpdateUserBody(_Body):
    role: Role | None = None
    disabled: bool | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    password: str | None = Field(
        default=None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH
    )


class TotpConfirmBody(_Body):
    code: str = Field(min_length=6, max_length=10)


def check_email(value: str) -> str:
    """Validate and normalise an email (the CLI shares the API's rule)."""
    return _check_email(value)


class CurrentPasswordBody(_Body):
    """A change of one's own credentials (TOTP on or off, new recovery codes)."""

    current_password: str = Field(alias="currentPassword", max_length=MAX_PASSWORD_LENGTH)


class ResetPasswordBody(_Body):
    """An admin's reset of another user's password: typed, or (absent) generated."""

    password: str | None = Field(
        default=None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH
    )


class ChangePasswordBody(_Body):
    current_password: str = Field(alias="currentPassword", max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Field(
        alias="newPassword", min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH
    )
