"""The webhooks API: admins only, the secret shown once and sealed at rest, every
change audited without the secret, the QuestionnaireResponse opt-in (https and an
explicit confirmation), and no client input answered with a 500."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.outbox.models import Delivery, OutboxMessage
from healthforms.responses.key_rotation import rotate_keys
from healthforms.security.principal import Role
from healthforms.webhooks.dispatcher import WebhookDispatcher
from healthforms.webhooks.models import WebhookAttempt, WebhookEndpoint
from healthforms.webhooks.service import deliveries_of, event_body, valid_secrets
from tests.outbox.conftest import AppFactory
from tests.support.response_factory import create_organization
from tests.support.staff import signed_in_client
from tests.webhooks.conftest import ALL_EVENTS, add_endpoint

HTTPS = "https://ehr.clinic.example/hooks/healthforms"


async def audit_rows(app: Any, organization_id: str) -> list[AuditEventRow]:
    async with app.state.hf.db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(
                AuditEventRow.organization_id == organization_id,
                AuditEventRow.action.like("webhook.%"),
            )
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())


async def test_admins_manage_endpoints_and_the_secret_is_shown_once_and_sealed(
    webhook_app: AppFactory,
) -> None:
    async with webhook_app(outbox_worker=False) as app:
        org = await create_organization(app.state.hf.db)
        other = await create_organization(app.state.hf.db)
        async with (
            signed_in_client(app, org, Role.ADMIN) as (admin, _),
            signed_in_client(app, org, Role.EDITOR) as (editor, _),
            signed_in_client(app, other, Role.ADMIN) as (stranger, _),
        ):
            endpoint_id, secret = await add_endpoint(
                admin, HTTPS, ["response.submitted"], description="EHR"
            )
            assert secret.startswith("whsec_")
            assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
            for path in ("/api/webhooks", f"/api/webhooks/{endpoint_id}"):
                assert (await editor.get(path)).status_code == 403
            assert (await editor.post("/api/webhooks", json={"url": HTTPS})).status_code == 403
            assert (await stranger.get(f"/api/webhooks/{endpoint_id}")).status_code == 404
            assert (await stranger.get("/api/webhooks")).json()["endpoints"] == []

            listed = (await admin.get("/api/webhooks")).json()
            assert listed["events"] == ALL_EVENTS
            (shown,) = listed["endpoints"]
            assert shown["url"] == HTTPS and shown["description"] == "EHR"
            assert shown["events"] == ["response.submitted"] and shown["enabled"] is True
            assert "secret" not in shown

            changed = await admin.patch(
                f"/api/webhooks/{endpoint_id}", json={"enabled": False, "events": ALL_EVENTS}
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["enabled"] is False
            rotated = await admin.post(f"/api/webhooks/{endpoint_id}/rotate-secret")
            new_secret = rotated.json()["secret"]
            assert (await admin.post(f"/api/webhooks/{endpoint_id}/test")).status_code == 202

            async with app.state.hf.db.sessions() as session:
                row = await session.get(WebhookEndpoint, endpoint_id)
                assert row is not None
                stored = repr(
                    [getattr(row, c.key) for c in WebhookEndpoint.__table__.columns]
                ).encode()
            for value in (secret, new_secret):
                raw = base64.b64decode(value.removeprefix("whsec_"))
                assert value.encode() not in stored and raw not in stored

            deleted = await admin.delete(f"/api/webhooks/{endpoint_id}")
            assert deleted.status_code == 204
            assert (await admin.get(f"/api/webhooks/{endpoint_id}")).status_code == 404

            events = await audit_rows(app, org)
            assert [e.action for e in events] == [
                "webhook.created",
                "webhook.updated",
                "webhook.secret_rotated",
                "webhook.test_sent",
                "webhook.deleted",
            ]
            for event in events:
                text = repr([getattr(event, c.key) for c in AuditEventRow.__table__.columns])
                assert secret not in text and new_secret not in text
                assert secret.removeprefix("whsec_") not in text


async def test_the_questionnaire_response_body_needs_https_and_a_confirmation(
    webhook_app: AppFactory,
) -> None:
    async with webhook_app(outbox_worker=False) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            plain = await admin.post(
                "/api/webhooks",
                json={"url": "http://127.0.0.1:9/h", "events": ALL_EVENTS, "fhirBody": True,
                      "confirmPhi": True},
            )  # fmt: skip
            assert plain.status_code == 422 and "fhirBody" in plain.json()["fields"]
            unconfirmed = await admin.post(
                "/api/webhooks", json={"url": HTTPS, "events": ALL_EVENTS, "fhirBody": True}
            )
            assert unconfirmed.status_code == 422
            assert "confirmPhi" in unconfirmed.json()["fields"]

            endpoint_id, _ = await add_endpoint(admin, HTTPS)
            refused = await admin.patch(f"/api/webhooks/{endpoint_id}", json={"fhirBody": True})
            assert refused.status_code == 422 and "confirmPhi" in refused.json()["fields"]
            on = await admin.patch(
                f"/api/webhooks/{endpoint_id}", json={"fhirBody": True, "confirmPhi": True}
            )
            assert on.status_code == 200 and on.json()["fhirBody"] is True
            # Moving it to a plain http URL while it carries PHI is refused; elsewhere on
            # https it must be confirmed again.
            moved = await admin.patch(
                f"/api/webhooks/{endpoint_id}",
                json={"url": "http://127.0.0.1:9/h", "confirmPhi": True},
            )
            assert moved.status_code == 422 and "fhirBody" in moved.json()["fields"]
            elsewhere = await admin.patch(
                f"/api/webhooks/{endpoint_id}", json={"url": HTTPS + "/v2"}
            )
            assert elsewhere.status_code == 422 and "confirmPhi" in elsewhere.json()["fields"]
            off = await admin.patch(f"/api/webhooks/{endpoint_id}", json={"fhirBody": False})
            assert off.status_code == 200 and off.json()["fhirBody"] is False
            actions = [(e.action, e.detail) for e in await audit_rows(app, org)]
            fhir = [d for a, d in actions if a == "webhook.fhir_body"]
            assert len(fhir) == 2
            assert '"enabled":true' in str(fhir[0]) and '"enabled":false' in str(fhir[1])

            # The body source (the FHIR builder, wired in app.py) is asked only for an
            # endpoint that opted in, on https, for a response event.
            asked: list[str] = []

            async def source(session: Any, keys: KeyRing, org_id: str, rid: str) -> dict[str, Any]:
                asked.append(rid)
                return {"resourceType": "QuestionnaireResponse", "id": rid}

            dispatcher = WebhookDispatcher(
                app.state.hf.settings, app.state.hf.db, app.state.hf.keys, app.state.hf.metrics,
                body_source=source,
            )  # fmt: skip
            message = OutboxMessage(
                id="obx_x", organization_id=org, kind="response.submitted",
                payload={"responseId": "rsp_1", "formId": "frm_1"},
                created_at=utcnow(),
            )  # fmt: skip
            async with app.state.hf.db.sessions() as session:
                row = await session.get(WebhookEndpoint, endpoint_id)
                assert row is not None
                plain_body = await dispatcher.compose(session, message, row)
                assert asked == [] and b"QuestionnaireResponse" not in plain_body
                row.fhir_body, row.fhir_body_confirmed_at = True, message.created_at
                with_body = await dispatcher.compose(session, message, row)
                assert asked == ["rsp_1"] and b'"resourceType":"QuestionnaireResponse"' in with_body
                row.url = "http://ehr.clinic.example/hooks"  # never over plain http
                assert b"QuestionnaireResponse" not in await dispatcher.compose(
                    session, message, row
                )
            await dispatcher.client.aclose()
            assert event_body(message, "https://x").startswith(b'{"data":')


async def test_bad_input_is_a_clear_4xx_never_a_500(webhook_app: AppFactory) -> None:
    async with webhook_app(outbox_worker=False) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            endpoint_id, _ = await add_endpoint(admin, HTTPS)
            bodies: list[Any] = [
                None, [], "x", 1, {}, {"url": HTTPS}, {"events": ALL_EVENTS},
                {"url": 1, "events": ALL_EVENTS}, {"url": "", "events": ALL_EVENTS},
                {"url": "ftp://x/", "events": ALL_EVENTS},
                {"url": "https://", "events": ALL_EVENTS},
                {"url": "https://user:pw@ehr.example/", "events": ALL_EVENTS},
                {"url": "https://ehr.example/#x", "events": ALL_EVENTS},
                {"url": "https://ehr.example:99999/", "events": ALL_EVENTS},
                {"url": "https://[::1/", "events": ALL_EVENTS},
                {"url": "https://ehr .example/", "events": ALL_EVENTS},
                {"url": "https://e\u0000hr.example/", "events": ALL_EVENTS},
                {"url": "https://" + "a" * 3000, "events": ALL_EVENTS},
                {"url": HTTPS, "events": []}, {"url": HTTPS, "events": "all"},
                {"url": HTTPS, "events": ["response.deleted"]}, {"url": HTTPS, "events": [1]},
                {"url": HTTPS, "events": ALL_EVENTS, "enabled": "yes"},
                {"url": HTTPS, "events": ALL_EVENTS, "description": "x" * 201},
                {"url": HTTPS, "events": ALL_EVENTS, "description": 5},
                {"url": HTTPS, "events": ALL_EVENTS, "secret": "whsec_mine"},
            ]  # fmt: skip
            for body in bodies:
                answer = await admin.post("/api/webhooks", json=body)
                assert answer.status_code == 422, (body, answer.status_code, answer.text)
                assert answer.json()["code"] == "validation_error"
                patched = await admin.patch(f"/api/webhooks/{endpoint_id}", json=body)
                assert patched.status_code in (200, 422), (body, patched.text)
            broken = await admin.post(
                "/api/webhooks", content=b"{not json", headers={"Content-Type": "application/json"}
            )
            assert broken.status_code in (400, 422)
            for path in (
                "/api/webhooks/nope",
                "/api/webhooks/" + "x" * 500,
                f"/api/webhooks/{endpoint_id}/deliveries/nope/redeliver",
                f"/api/webhooks/{endpoint_id}/deliveries/{'y' * 400}/redeliver",
                f"/api/webhooks/{endpoint_id}/deliveries/obx_1:webhook:whe_other/redeliver",
            ):
                method = admin.post if path.endswith("redeliver") else admin.get
                assert (await method(path)).status_code == 404, path
            assert (await admin.post("/api/webhooks/nope/test")).status_code == 404
            assert (await admin.post("/api/webhooks/nope/rotate-secret")).status_code == 404
            bad = await admin.get(f"/api/webhooks/{endpoint_id}/deliveries?status=lost")
            assert bad.status_code == 422
            assert (await admin.get(f"/api/webhooks/{endpoint_id}")).json()["url"] == HTTPS


async def test_the_call_log_keeps_thirty_days(webhook_app: AppFactory) -> None:
    async with webhook_app(outbox_worker=False) as app:
        state = app.state.hf
        now = utcnow()
        async with state.db.sessions() as session, session.begin():
            for days in (31, 29, 0):
                session.add(
                    WebhookAttempt(
                        endpoint_id="whe_x", organization_id="org_x", delivery_id="d",
                        event_type="webhook.test", attempt=1, status_code=200, latency_ms=3,
                        at=now - timedelta(days=days),
                    )
                )  # fmt: skip
        dispatcher = WebhookDispatcher(state.settings, state.db, state.keys, state.metrics)
        try:
            assert await dispatcher.prune_log() == 1
            assert await dispatcher.prune_log() == 0
        finally:
            await dispatcher.client.aclose()
        async with state.db.sessions() as session:
            left = (await session.execute(select(WebhookAttempt.at))).scalars().all()
        assert len(left) == 2 and all(at > now - timedelta(days=30) for at in left)


async def test_an_endpoints_deliveries_are_its_own_even_with_like_wildcards_in_ids(
    webhook_app: AppFactory,
) -> None:
    async with webhook_app(outbox_worker=False) as app:
        db = app.state.hf.db
        async with db.sessions() as session, session.begin():
            message = OutboxMessage(
                id="obx_like", organization_id="org_x", kind="webhook.test", payload={},
                created_at=utcnow(),
            )  # fmt: skip
            session.add(message)
            await session.flush()
            for endpoint in ("whe_a%b", "wheXaXb", "whe_a%bc"):
                session.add(
                    Delivery(
                        id=f"obx_like:webhook:{endpoint}", message_id="obx_like",
                        organization_id="org_x", channel="webhook", template="webhook.test",
                        status="pending", attempts=0, next_attempt_at=utcnow(),
                    )
                )  # fmt: skip
        async with db.sessions() as session:
            found = (
                await session.execute(select(Delivery.id).where(deliveries_of("whe_a%b")))
            ).scalars()
            assert list(found) == ["obx_like:webhook:whe_a%b"]


async def test_a_master_key_rotation_rewraps_both_secrets_of_an_endpoint(
    webhook_app: AppFactory,
) -> None:
    """`healthforms keys rotate` moves the current and the still-valid previous secret
    under the new master key: once the old master key is retired, both still sign."""
    async with webhook_app(outbox_worker=False) as app:
        state = app.state.hf
        org = await create_organization(state.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            endpoint_id, old_secret = await add_endpoint(admin, "http://127.0.0.1:9/h")
            rotated = await admin.post(f"/api/webhooks/{endpoint_id}/rotate-secret")
            new_secret = rotated.json()["secret"]

        master = KeyRing(current=base64.b64decode(generate_key()), previous=(state.keys.current,))
        also = ((WebhookEndpoint, "secret_"), (WebhookEndpoint, "previous_"))
        counts = {c.name: c for c in await rotate_keys(state.db, master, also=also)}
        assert counts["webhook_endpoints.secret"].rewrapped == 1
        assert counts["webhook_endpoints.previous"].rewrapped == 1
        again = {c.name: c for c in await rotate_keys(state.db, master, also=also)}
        assert again["webhook_endpoints.secret"].current == 1
        assert again["webhook_endpoints.previous"].current == 1

        only_new = KeyRing(current=master.current)
        async with state.db.sessions() as session:
            row = await session.get(WebhookEndpoint, endpoint_id)
            assert row is not None
            assert valid_secrets(only_new, row, utcnow()) == [new_secret, old_secret]
