"""Whose response it is: the patient's name and date of birth, shown and searchable
without plaintext in the database.

A form marks the fields that identify the patient (`"identifies": "name"` on text
fields, `"birthDate"` on a date field). When a response is stored, those answers are
copied into a small sealed record of their own (response_identities: envelope
encryption, AAD = response id), so the responses list decrypts a few bytes per row
instead of every answer, and into blind indexes (response_search_tokens): a keyed
HMAC of each normalised value, under a key derived from the master key
(purpose "blind-index") that is never stored. Equal values give equal tokens inside
one organisation (that is what makes them searchable; it also means someone with the
database can see that two responses share a name, never what it is), and the
organisation's id is part of the MACed text, so tokens do not match across clinics.

Search is by whole words of a name ("doe" finds "Jane Doe"; "do" does not) and by the
exact date of birth. Each token row names the master key that made it; a search asks
under every configured key, and `healthforms keys rotate` rebuilds the tokens under the
current one, so a rotation never hides a patient.
"""

from __future__ import annotations

import hmac
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import structlog
from sqlalchemy import Select, Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.crypto.envelope import DecryptionFailed, Sealed, identity_aad, open_json, seal_json
from healthforms.crypto.keys import KeyRing, key_id
from healthforms.errors import ValidationFailed
from healthforms.forms.schema import FieldDef
from healthforms.responses.models import ResponseIdentity, ResponseSearchToken

log = structlog.get_logger("healthforms.responses")

BLIND_INDEX_PURPOSE = "blind-index"
MAX_NAME_WORDS = 8
MAX_SEARCH_NAME = 200


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    name: str | None = None
    birth_date: str | None = None  # ISO 8601 date, as answered

    def is_empty(self) -> bool:
        return not self.name and not self.birth_date

    def as_json(self) -> dict[str, str | None]:
        return {"name": self.name, "birthDate": self.birth_date}


def identity_of(fields: Sequence[FieldDef], answers: dict[str, Any]) -> PatientIdentity:
    """The patient's identity from the answers to the fields marked as identifying."""
    parts = [
        answers[f.id].strip()
        for f in fields
        if f.identifies == "name" and isinstance(answers.get(f.id), str) and answers[f.id].strip()
    ]
    birth = next(
        (
            answers[f.id]
            for f in fields
            if f.identifies == "birthDate" and isinstance(answers.get(f.id), str)
        ),
        None,
    )
    return PatientIdentity(name=" ".join(parts) or None, birth_date=birth or None)


def name_words(name: str) -> list[str]:
    """A name as the words it is searched by: accents and case dropped, punctuation
    ("O'Neil", "Smith-Jones") split, so the patient's spelling and staff's typing meet."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    cleaned = "".join(ch if ch.isalnum() else " " for ch in plain)
    words: list[str] = []
    for word in cleaned.split():
        if word not in words:
            words.append(word)
    return words[:MAX_NAME_WORDS]


def parse_birth_date(value: str) -> str | None:
    """A date of birth as typed into a search (2001-04-30, 04/30/2001 or 30.04.2001) in
    ISO form, or None."""
    text = value.strip()
    try:
        if "/" in text:  # US order, as clinics here write it
            month, day, year = (int(p) for p in text.split("/"))
            return date(year, month, day).isoformat()
        if "." in text:
            day, month, year = (int(p) for p in text.split("."))
            return date(year, month, day).isoformat()
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


def _token(key: bytes, organization_id: str, kind: str, value: str) -> str:
    message = f"{organization_id}\x1f{kind}\x1f{value}".encode()
    return hmac.new(key, message, "sha256").hexdigest()[:32]


def _terms(identity: PatientIdentity) -> list[tuple[str, str]]:
    terms = [("name", word) for word in name_words(identity.name or "")]
    if identity.birth_date:
        terms.append(("dob", identity.birth_date))
    return terms


async def store_identity(
    session: AsyncSession,
    keys: KeyRing,
    organization_id: str,
    response_id: str,
    identity: PatientIdentity,
) -> None:
    """Seal the identity and write its blind indexes, in the caller's transaction."""
    if identity.is_empty():
        return
    sealed = seal_json(keys, identity.as_json(), identity_aad(response_id))
    await session.execute(
        _INSERT_IDENTITY,
        {
            "response_id": response_id,
            "organization_id": organization_id,
            "ciphertext": sealed.ciphertext,
            "wrapped_key": sealed.wrapped_key,
            "key_id": sealed.key_id,
        },
    )
    rows = _token_rows(keys, organization_id, response_id, identity)
    if rows:
        await session.execute(_INSERT_TOKEN, rows)


def _token_rows(
    keys: KeyRing, organization_id: str, response_id: str, identity: PatientIdentity
) -> list[dict[str, str]]:
    key = keys.hmac_key(BLIND_INDEX_PURPOSE)
    return [
        {
            "response_id": response_id,
            "organization_id": organization_id,
            "token": _token(key, organization_id, kind, value),
            "key_id": keys.current_id,
        }
        for kind, value in _terms(identity)
    ]


_INSERT_IDENTITY = insert(cast(Table, ResponseIdentity.__table__))
_INSERT_TOKEN = insert(cast(Table, ResponseSearchToken.__table__))


async def delete_identity(session: AsyncSession, response_ids: Sequence[str]) -> None:
    await session.execute(
        delete(ResponseSearchToken).where(ResponseSearchToken.response_id.in_(response_ids))
    )
    await session.execute(
        delete(ResponseIdentity).where(ResponseIdentity.response_id.in_(response_ids))
    )


async def read_identities(
    session: AsyncSession, keys: KeyRing, response_ids: Sequence[str]
) -> dict[str, PatientIdentity | None]:
    """The identities of these responses that have one; None for one that will not
    decrypt (altered, or its key is not configured): the list shows it as unreadable."""
    if not response_ids:
        return {}
    rows = await session.execute(
        select(ResponseIdentity).where(ResponseIdentity.response_id.in_(response_ids))
    )
    found: dict[str, PatientIdentity | None] = {}
    for row in rows.scalars():
        found[row.response_id] = open_identity(keys, row)
    return found


def open_identity(keys: KeyRing, row: ResponseIdentity) -> PatientIdentity | None:
    sealed = Sealed(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
    try:
        payload = open_json(keys, sealed, identity_aad(row.response_id))
    except (DecryptionFailed, UnicodeDecodeError, ValueError) as exc:
        log.error("identity_decrypt_failed", response_id=row.response_id, reason=type(exc).__name__)
        return None
    if not isinstance(payload, dict):
        return None
    name, birth = payload.get("name"), payload.get("birthDate")
    return PatientIdentity(
        name=name if isinstance(name, str) else None,
        birth_date=birth if isinstance(birth, str) else None,
    )


@dataclass(frozen=True, slots=True)
class PatientSearch:
    """What staff typed, normalised: name words and/or an ISO date of birth."""

    words: tuple[str, ...] = ()
    birth_date: str | None = None

    def is_empty(self) -> bool:
        return not self.words and self.birth_date is None


def parse_search(name: str | None, birth_date: str | None) -> PatientSearch:
    """The `name` and `birthDate` parameters of a search; 422 naming the one that
    cannot be searched."""
    errors: dict[str, str] = {}
    words: list[str] = []
    if name is not None and name.strip():
        if len(name) > MAX_SEARCH_NAME:
            errors["name"] = f"at most {MAX_SEARCH_NAME} characters"
        else:
            words = name_words(name)
            if not words:
                errors["name"] = "Enter a name (letters or digits)."
    iso: str | None = None
    if birth_date is not None and birth_date.strip():
        iso = parse_birth_date(birth_date[:40])
        if iso is None:
            errors["birthDate"] = "Enter a date of birth as YYYY-MM-DD or MM/DD/YYYY."
    if errors:
        raise ValidationFailed(errors)
    return PatientSearch(tuple(words), iso)


def matching_ids(keys: KeyRing, organization_id: str, search: PatientSearch) -> Select[str]:
    """A subquery of the response ids whose blind indexes hold every term searched, under
    any configured master key (tokens made before a rotation still match)."""
    terms = [("name", w) for w in search.words]
    if search.birth_date:
        terms.append(("dob", search.birth_date))
    tokens: set[str] = set()
    for master in (keys.current, *keys.previous):
        key = keys.hmac_key_for(key_id(master), BLIND_INDEX_PURPOSE)
        assert key is not None  # a held key
        tokens.update(_token(key, organization_id, kind, value) for kind, value in terms)
    wanted = len(terms)
    return (
        select(ResponseSearchToken.response_id)
        .where(
            ResponseSearchToken.organization_id == organization_id,
            ResponseSearchToken.token.in_(sorted(tokens)),
        )
        .group_by(ResponseSearchToken.response_id)
        # Each term once, whichever key made its token.
        .having(func.count(func.distinct(ResponseSearchToken.token)) >= wanted)
    )


async def rebuild_tokens(
    session: AsyncSession,
    keys: KeyRing,
    organization_id: str,
    response_id: str,
    identity: PatientIdentity,
) -> None:
    """Replace a response's blind indexes with ones under the current key."""
    await session.execute(
        delete(ResponseSearchToken).where(ResponseSearchToken.response_id == response_id)
    )
    rows = _token_rows(keys, organization_id, response_id, identity)
    if rows:
        await session.execute(_INSERT_TOKEN, rows)
