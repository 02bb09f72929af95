"""The link to a saved draft, emailed on the patient's request through the outbox: the
address and token sealed in the message and dropped once sent, the form and answers never
in the email, at most one a minute per draft, and none from a service without mail."""

from __future__ import annotations

from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.outbox.models import OutboxMessage
from tests.outbox.conftest import (
    AppFactory,
    all_handled,
    eventually,
    outbox_app,
    smtp,
    wait_for_mail,
)
from tests.submissions.drafts.helpers import (
    MARKER,
    half_answers,
    nonce_of,
    phone,
    public_id_of,
    save,
)
from tests.support.plaintext import tables_holding
from tests.support.response_factory import create_form, create_organization
from tests.support.smtp import SmtpServer

__all__ = ["outbox_app", "smtp"]

ADDRESS = "quill.vexhaven@example.org"


async def test_the_link_is_emailed_once_asked_and_the_message_forgets_it(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(**smtp.settings()) as app:
        db = app.state.hf.db
        org = await create_organization(db)
        form = (await create_form(db, org, title="Knee pain intake"))[0]
        public_id = await public_id_of(db, form.form_id)
        async with phone(app) as device:
            nonce = await nonce_of(device, public_id)
            saved = await save(device, public_id, half_answers(), nonce=nonce)
            assert saved.json()["canEmail"] is True
            token = saved.json()["draft"]["token"]
            path = f"/api/public/drafts/{token}/email"
            for bad in ({"email": "nope"}, {}, {"email": ["x"]}, None):
                refused = await device.post(path, json=bad)
                assert refused.status_code == 422, refused.text
                assert list(refused.json()["fields"]) == ["email"]
            asked = await device.post(path, json={"email": ADDRESS})
            assert asked.status_code == 202, asked.text
            again = await device.post(path, json={"email": ADDRESS})
            assert again.status_code == 429, again.text
            assert again.headers["retry-after"] == "60"
            unknown = await device.post(
                f"/api/public/drafts/{'q' * 43}/email", json={"email": ADDRESS}
            )
            assert unknown.status_code == 404

        (mail,) = await wait_for_mail(smtp, 1)
        assert mail.recipients == [ADDRESS]
        assert mail.message["Subject"].startswith("Your saved form from Clinic ")
        assert f"https://forms.clinic.example/f/{public_id}#draft={token}" in mail.text
        for secret in ("Knee pain", MARKER, "Broke a wrist"):
            assert secret not in mail.text
        await eventually(lambda: all_handled(app))
        async with db.sessions() as session:
            message = (
                await session.execute(
                    select(OutboxMessage).where(OutboxMessage.kind == "draft.link")
                )
            ).scalar_one()
            emailed = (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.action == "draft.emailed")
                )
            ).scalar_one()
        assert message.payload == {"draftId": emailed.resource_id}  # address and token gone
        assert await tables_holding(db, ADDRESS) == []
        assert await tables_holding(db, token) == []


async def test_without_mail_the_page_is_told_and_asking_is_422(outbox_app: AppFactory) -> None:
    async with outbox_app() as app:
        db = app.state.hf.db
        form = (await create_form(db, await create_organization(db)))[0]
        public_id = await public_id_of(db, form.form_id)
        async with phone(app) as device:
            nonce = await nonce_of(device, public_id)
            saved = await save(device, public_id, half_answers(), nonce=nonce)
            assert saved.json()["canEmail"] is False
            token = saved.json()["draft"]["token"]
            refused = await device.post(
                f"/api/public/drafts/{token}/email", json={"email": ADDRESS}
            )
            assert refused.status_code == 422
            assert refused.json()["fields"] == {"email": "this service sends no email"}
