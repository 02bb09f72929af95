"""`healthforms responses reindex`: rebuild whose response it is from the answers, for
responses stored before their form marked the fields that identify the patient."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from healthforms.audit.events import RESPONSES_REINDEXED, AuditEvent
from healthforms.audit.store import append_many_in
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import FieldDef, FieldType, fields_from_json
from healthforms.responses.models import ResponseRow
from healthforms.responses.patients import delete_identity, identity_of, store_identity
from healthforms.responses.service import ResponseUnreadable, open_response


@dataclass(slots=True)
class ReindexCount:
    indexed: int = 0  # identity and blind indexes rebuilt
    anonymous: int = 0  # its form version marks no identifying field (or none answered)
    failed: int = 0  # its answers do not decrypt

    def line(self) -> str:
        return (
            f"patients: {self.indexed} indexed, {self.anonymous} without identifying answers, "
            f"{self.failed} failed"
        )


async def reindex_patients(
    db: Database,
    keys: KeyRing,
    *,
    form_id: str | None = None,
    batch: int = 200,
) -> ReindexCount:
    """Rebuild every response's identity and blind indexes from its answers and its
    version's fields: for responses stored before their form marked the fields that
    identify the patient (`healthforms responses reindex`). Each batch commits with one
    `responses.reindexed` event per organisation naming the responses it decrypted."""
    count = ReindexCount()
    fields_of: dict[str, list[FieldDef]] = {}
    last = ""
    while True:
        touched: dict[str, list[str]] = {}
        async with db.sessions() as session, session.begin():
            query = select(ResponseRow).where(ResponseRow.id > last)
            if form_id is not None:
                query = query.where(ResponseRow.form_id == form_id)
            rows = list(
                (await session.execute(query.order_by(ResponseRow.id).limit(batch))).scalars()
            )
            if not rows:
                return count
            for row in rows:
                if row.form_version_id not in fields_of:
                    version = await session.get(FormVersion, row.form_version_id)
                    raw = version.fields if version is not None else []
                    known = {t.value for t in FieldType}
                    fields_of[row.form_version_id] = fields_from_json(
                        [f for f in raw if f.get("type") in known]
                    )
                try:
                    content = open_response(keys, row)
                except ResponseUnreadable:
                    count.failed += 1
                    continue
                identity = identity_of(fields_of[row.form_version_id], content.answers)
                await delete_identity(session, [row.id])
                if identity.is_empty():
                    count.anonymous += 1
                    continue
                await store_identity(session, keys, row.organization_id, row.id, identity)
                touched.setdefault(row.organization_id, []).append(row.id)
                count.indexed += 1
            events = [
                AuditEvent(
                    action=RESPONSES_REINDEXED,
                    organization_id=organization_id,
                    resource_type="form" if form_id else None,
                    resource_id=form_id,
                    detail={"count": len(ids), "responseIds": ids},
                )
                for organization_id, ids in touched.items()
            ]
            if events:
                await append_many_in(session, keys, events)
            last = rows[-1].id
