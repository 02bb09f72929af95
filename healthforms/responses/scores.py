"""A response's calculated scores for the responses list, without plaintext in the
database.

A score is PHI (a PHQ-9 total says how depressed the patient is). It is calculated at
submission (forms/scores.py) and sealed with the answers, which stay the record of
truth (the response page, the PDF and the exports read it from there). The list shows
it for up to 500 rows at a time, and opening every row's answers (up to 512 KiB each,
signatures included) for a number would make the list as slow as an export: so a copy
of the scores is sealed into a small record of its own (response_scores: envelope
encryption, AAD = "scores:<response id>"), written in the response's transaction, the
way responses/patients.py copies the patient's identity. Whoever can read the database
learns which responses have scores, never what they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_json, scores_aad, seal_json
from healthforms.crypto.keys import KeyRing
from healthforms.forms.scores import ScoreResult, scores_json
from healthforms.responses.models import ResponseScores

log = structlog.get_logger("healthforms.responses")

# The list says a record would not decrypt instead of failing.
UNREADABLE_SCORES: dict[str, Any] = {"unreadable": True}

_INSERT_SCORES = insert(cast(Table, ResponseScores.__table__))


async def store_scores(
    session: AsyncSession,
    keys: KeyRing,
    organization_id: str,
    response_id: str,
    results: Sequence[ScoreResult],
) -> None:
    """Seal the scores (by field id) for the list, in the caller's transaction."""
    if not results:
        return
    sealed = seal_json(keys, scores_json(results), scores_aad(response_id))
    await session.execute(
        _INSERT_SCORES,
        {
            "response_id": response_id,
            "organization_id": organization_id,
            "ciphertext": sealed.ciphertext,
            "wrapped_key": sealed.wrapped_key,
            "key_id": sealed.key_id,
        },
    )


def open_scores(keys: KeyRing, row: ResponseScores) -> dict[str, Any]:
    """A record's scores by field id; UNREADABLE_SCORES when it will not decrypt."""
    sealed = Sealed(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
    try:
        payload = open_json(keys, sealed, scores_aad(row.response_id))
    except (DecryptionFailed, UnicodeDecodeError, ValueError) as exc:
        log.error("scores_decrypt_failed", response_id=row.response_id, reason=type(exc).__name__)
        return UNREADABLE_SCORES
    return payload if isinstance(payload, dict) else UNREADABLE_SCORES


async def read_scores(
    session: AsyncSession, keys: KeyRing, response_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The scores of these responses that have any, by response id."""
    if not response_ids:
        return {}
    rows = await session.execute(
        select(ResponseScores).where(ResponseScores.response_id.in_(list(response_ids)))
    )
    return {row.response_id: open_scores(keys, row) for row in rows.scalars()}
