"""Emails to a patient through the outbox: their personal link when staff ask for it
(the request becomes `sent`), and a receipt with the confirmation code after they sent
the form. Neither names the form or carries an answer."""

from __future__ import annotations

import re

from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.outbox.models import OutboxMessage
from healthforms.security.principal import Role
from tests.outbox.conftest import AppFactory, all_handled, eventually, published_form, wait_for_mail
from tests.support.apps import asgi_client
from tests.support.response_factory import create_organization
from tests.support.smtp import SmtpServer
from tests.support.staff import signed_in_client

PATIENT_EMAIL = "dana.patient@example.org"


async def test_the_link_is_emailed_then_a_receipt_after_the_patient_sends_the_form(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(**smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (editor, _):
            form_id, _ = await published_form(editor)
            created = await editor.post(
                f"/api/forms/{form_id}/requests",
                json={"patientName": "Dana Okafor", "email": PATIENT_EMAIL, "sendEmail": True},
            )
            assert created.status_code == 201, created.text
            request_id = created.json()["request"]["id"]
            link = created.json()["link"]
            # The builder's own alert email comes later; the patient's link first.
            (mail,) = await wait_for_mail(smtp, 1)
            assert mail.recipients == [PATIENT_EMAIL]
            assert mail.message["Subject"].endswith("has sent you a form")
            token = link.rsplit("/", 1)[1]
            assert f"/r/{token}" in mail.text
            assert "Knee pain intake" not in mail.text  # the form is not named

            async def sent() -> bool:
                listed = (await editor.get(f"/api/forms/{form_id}/requests")).json()
                return bool(listed["requests"][0]["state"] == "sent")

            await eventually(sent)
            await eventually(lambda: all_handled(app))
            async with app.state.hf.db.sessions() as session:
                message = (
                    await session.execute(
                        select(OutboxMessage).where(OutboxMessage.kind == "request.link")
                    )
                ).scalar_one()
                sent_events = (
                    (
                        await session.execute(
                            select(AuditEventRow).where(
                                AuditEventRow.action == "request.sent",
                                AuditEventRow.resource_id == request_id,
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            assert message.payload == {"requestId": request_id}  # the token is gone
            assert [e.detail for e in sent_events] == ['{"channel":"email"}']

            # The patient follows the link and sends the form.
            async with asgi_client(app) as patient:
                opened = await patient.get(f"/api/public/requests/{token}")
                assert opened.status_code == 200, opened.text
                answered = await patient.post(
                    f"/api/public/requests/{token}/responses",
                    json={
                        "nonce": opened.json()["nonce"],
                        "answers": {"name": "Dana Okafor", "reason": "Itchy rash on left arm"},
                    },
                )
                assert answered.status_code == 201, answered.text
                code = answered.json()["confirmation"]
            got = await wait_for_mail(smtp, 3)  # the receipt and the builder's alert
            receipt = next(m for m in got if m.recipients == [PATIENT_EMAIL] and m is not mail)
            assert receipt.message["Subject"].endswith("received your form")
            assert code in receipt.text
            for secret in ("Itchy rash", "Knee pain"):
                assert secret not in receipt.text
            alert = next(m for m in got if m.recipients != [PATIENT_EMAIL])
            assert "Dana" not in alert.text and code not in alert.text
            assert len({m.message_id for m in got}) == 3


async def test_asking_to_email_without_an_address_or_without_smtp_is_422(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(**smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (editor, _):
            form_id, _ = await published_form(editor)
            for body in (
                {"patientName": "A", "sendEmail": True},
                {"patientName": "A", "email": PATIENT_EMAIL, "sendEmail": "yes"},
            ):
                refused = await editor.post(f"/api/forms/{form_id}/requests", json=body)
                assert refused.status_code == 422, body
                assert list(refused.json()["fields"]) == ["sendEmail"]
    async with outbox_app() as app:  # no SMTP configured
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (editor, _):
            form_id, _ = await published_form(editor)
            refused = await editor.post(
                f"/api/forms/{form_id}/requests",
                json={"patientName": "A", "email": PATIENT_EMAIL, "sendEmail": True},
            )
            assert refused.status_code == 422
            assert re.search("sends no email", refused.json()["fields"]["sendEmail"])
