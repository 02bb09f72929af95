"""Webhooks end to end, with real HTTP receivers on this machine: every event reaches
a receiver that was down for a while exactly once by webhook-id, signed so that the
`standardwebhooks` reference library accepts it, and without PHI; failing, hanging,
redirecting and flooding receivers; dead letters and redelivery; secret rotation;
Redis killed and started again mid-delivery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from healthforms.security.principal import Role
from healthforms.webhooks.dispatcher import WebhookDispatcher
from healthforms.webhooks.models import WebhookAttempt, WebhookEndpoint
from healthforms.webhooks.signing import message_id_for
from tests.outbox.conftest import AppFactory, eventually, published_form, submit
from tests.support.apps import asgi_client
from tests.support.response_factory import create_organization
from tests.support.staff import signed_in_client
from tests.webhooks.conftest import (
    MARKER,
    add_endpoint,
    assert_no_phi,
    webhook_deliveries,
)
from tests.webhooks.receiver import Receiver, running_receiver


async def attempts_of(app: FastAPI, endpoint_id: str) -> list[WebhookAttempt]:
    async with app.state.hf.db.sessions() as session:
        rows = await session.execute(
            select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
        )
        return list(rows.scalars())


async def statuses(app: FastAPI) -> list[str]:
    return sorted(d.status for d in await webhook_deliveries(app))


def got(receiver: Receiver, count: int) -> Any:
    async def check() -> bool:
        return len(receiver.unique()) >= count

    return check


async def test_a_receiver_down_for_a_while_gets_every_event_once_by_id_signed_and_without_phi(
    webhook_app: AppFactory,
) -> None:
    receiver = Receiver()  # its port is chosen, nothing listens on it yet
    async with webhook_app() as app:
        org = await create_organization(app.state.hf.db)
        async with (
            signed_in_client(app, org, Role.ADMIN) as (admin, _),
            signed_in_client(app, org, Role.EDITOR) as (editor, _),
        ):
            endpoint_id, secret = await add_endpoint(admin, receiver.url)
            form_id, public_id = await published_form(editor)  # form.published
            codes = [await submit(app, public_id) for _ in range(2)]  # 2 x response.submitted
            listed = await editor.get(f"/api/forms/{form_id}/responses")
            first = listed.json()["responses"][0]["id"]
            reviewed = await editor.post(
                f"/api/responses/{first}/status", json={"status": "reviewed"}
            )
            assert reviewed.status_code == 200, reviewed.text
            created = await editor.post(
                f"/api/forms/{form_id}/requests", json={"patientName": "Dana " + MARKER}
            )
            token = created.json()["link"].rsplit("/", 1)[1]
            async with asgi_client(app) as patient:
                opened = await patient.get(f"/api/public/requests/{token}")
                answered = await patient.post(
                    f"/api/public/requests/{token}/responses",
                    json={"nonce": opened.json()["nonce"], "answers": {"name": MARKER}},
                )
                assert answered.status_code == 201, answered.text
            codes.append(answered.json()["confirmation"])
            # form.published, 3 x response.submitted, response.reviewed, request.completed
            expected = 6

            async def refused_for_a_while() -> bool:
                tried = await attempts_of(app, endpoint_id)
                return len({a.delivery_id for a in tried}) == expected and all(
                    a.status_code is None for a in tried
                )

            await eventually(refused_for_a_while)
            assert "sent" not in await statuses(app)
            receiver.start()
            try:
                await eventually(got(receiver, expected), timeout_s=30)
                await eventually(lambda: _all_sent(app, expected))
                unique = receiver.unique()
                assert len(unique) == expected
                deliveries = await webhook_deliveries(app)
                assert set(unique) == {message_id_for(d.id) for d in deliveries}
                kinds = sorted(call.verify(secret)["type"] for call in unique.values())
                assert kinds == sorted(
                    ["form.published", "request.completed", "response.reviewed"]
                    + ["response.submitted"] * 3
                )
                for call in receiver.received():
                    document = call.verify(secret)  # every copy on the wire is signed
                    assert set(document) == {"type", "timestamp", "data"}
                    data = document["data"]
                    assert set(data) <= {
                        "responseId", "formId", "requestId", "version", "links"
                    }  # fmt: skip
                    for link in data.get("links", {}).values():
                        assert link.startswith("https://forms.clinic.example/api/")
                    assert call.headers["user-agent"].startswith("healthforms-webhooks/")
                assert_no_phi(receiver, "Sore knee", "Dana", *codes)
                published = next(
                    c.document for c in unique.values() if c.document["type"] == "form.published"
                )
                assert published["data"]["formId"] == form_id and published["data"]["version"] == 1
            finally:
                receiver.stop()


async def _all_sent(app: FastAPI, count: int) -> bool:
    found = await statuses(app)
    return found == ["sent"] * count


async def test_a_hanging_receiver_does_not_hold_the_others_and_its_circuit_opens(
    webhook_app: AppFactory,
) -> None:
    with (
        running_receiver("ok") as healthy,
        running_receiver("hang") as hanging,
        running_receiver("fail") as failing,
        running_receiver("ok") as target,
        running_receiver("redirect") as redirecting,
        running_receiver("huge") as flooding,
    ):
        redirecting.redirect_to = target.url
        async with webhook_app(
            webhook_timeout_s=1.0, webhook_circuit_failures=2, webhook_circuit_cooldown_s=1.0
        ) as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                ids = {}
                for name, server in (
                    ("healthy", healthy),
                    ("hanging", hanging),
                    ("failing", failing),
                    ("redirecting", redirecting),
                    ("flooding", flooding),
                ):
                    ids[name], _ = await add_endpoint(admin, server.url, ["form.published"])
                await published_form(admin)
                # The healthy receiver has its event while the hanging one holds its call.
                await eventually(got(healthy, 1))
                await eventually(got(flooding, 1))

                async def held() -> bool:
                    return hanging.hanging > 0

                await eventually(held)

                # The flood was cut at the cap: a success, logged with its status.
                async def flood_logged() -> bool:
                    tried = await attempts_of(app, ids["flooding"])
                    return any(a.status_code == 200 and a.error is None for a in tried)

                await eventually(flood_logged)

                # A redirect is a failure and is not followed.
                async def redirect_logged() -> bool:
                    tried = await attempts_of(app, ids["redirecting"])
                    return any(a.status_code == 302 for a in tried)

                await eventually(redirect_logged)
                assert target.received() == []

                # The hanging endpoint: timeouts until its circuit opens.
                async def circuit_open() -> bool:
                    answer = await admin.get(f"/api/webhooks/{ids['hanging']}")
                    return bool(answer.json()["circuit"] == "open")

                await eventually(circuit_open)
                tried = await attempts_of(app, ids["hanging"])
                assert tried and all(a.error == "Timeout" for a in tried)
                # The failing one recovers: its event is sent once the receiver is fixed.
                await eventually(lambda: _failed_with(app, ids["failing"], 500))
                failing.set_mode("ok")
                hanging.set_mode("ok")
                await eventually(got(failing, 1))
                await eventually(lambda: _has_status(app, ids["failing"], "sent"))
                await eventually(lambda: _has_status(app, ids["hanging"], "sent"), timeout_s=30)
                log = (await admin.get(f"/api/webhooks/{ids['failing']}/deliveries")).json()
                assert log["deliveries"][0]["status"] == "sent"
                assert {a["statusCode"] for a in log["attempts"]} >= {500, 200}
                assert all(isinstance(a["latencyMs"], int) for a in log["attempts"])
                closed = (await admin.get(f"/api/webhooks/{ids['hanging']}")).json()
                assert closed["circuit"] == "closed" and closed["consecutiveFailures"] == 0


async def _failed_with(app: FastAPI, endpoint_id: str, status: int) -> bool:
    return any(a.status_code == status for a in await attempts_of(app, endpoint_id))


async def _has_status(app: FastAPI, endpoint_id: str, status: str) -> bool:
    return any(
        d.status == status and d.id.endswith(endpoint_id) for d in await webhook_deliveries(app)
    )


async def test_the_last_failure_is_a_dead_letter_that_an_admin_redelivers_with_the_same_id(
    webhook_app: AppFactory,
) -> None:
    with running_receiver("fail") as receiver:
        async with webhook_app(webhook_max_attempts=3) as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                endpoint_id, secret = await add_endpoint(admin, receiver.url)
                tested = await admin.post(f"/api/webhooks/{endpoint_id}/test")
                assert tested.status_code == 202, tested.text
                delivery_id = tested.json()["deliveryId"]

                async def dead() -> list[Any]:
                    answer = await admin.get(f"/api/webhooks/{endpoint_id}/deliveries?status=dead")
                    return list(answer.json()["deliveries"])

                (letter,) = await eventually(dead)
                assert letter["id"] == delivery_id and letter["attempts"] == 3
                assert letter["lastError"] == "HTTP 500"
                assert len(receiver.received()) == 3
                assert len(receiver.unique()) == 1  # the same webhook-id on every attempt
                receiver.set_mode("ok")
                again = await admin.post(
                    f"/api/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
                )
                assert again.status_code == 202, again.text
                await eventually(lambda: _has_status(app, endpoint_id, "sent"))
                calls = receiver.received()
                assert len(calls) == 4 and {c.webhook_id for c in calls} == {
                    tested.json()["webhookId"]
                }
                assert calls[-1].verify(secret)["type"] == "webhook.test"
                # Not dead any more: a second redelivery finds nothing to do.
                twice = await admin.post(
                    f"/api/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
                )
                assert twice.status_code == 404


async def test_after_a_rotation_both_secrets_verify_until_the_old_one_expires(
    webhook_app: AppFactory, receiver: Receiver
) -> None:
    async with webhook_app() as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            endpoint_id, old = await add_endpoint(admin, receiver.url)
            rotated = await admin.post(f"/api/webhooks/{endpoint_id}/rotate-secret")
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()["secret"]
            assert new != old and new.startswith("whsec_")
            assert rotated.json()["secretVersion"] == 2
            assert rotated.json()["previousSecretExpiresAt"] is not None
            await admin.post(f"/api/webhooks/{endpoint_id}/test")
            (call,) = await asyncio.to_thread(receiver.wait_for, lambda c: len(c) == 1)
            assert len(call.headers["webhook-signature"].split(" ")) == 2
            assert call.verify(old)["type"] == call.verify(new)["type"] == "webhook.test"
            # The overlap is over: the old secret no longer signs.
            async with app.state.hf.db.sessions() as session, session.begin():
                await session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint_id)
                    .values(previous_expires_at=WebhookEndpoint.created_at)
                )
            await admin.post(f"/api/webhooks/{endpoint_id}/test")
            calls = await asyncio.to_thread(receiver.wait_for, lambda c: len(c) == 2)
            last = calls[-1]
            assert len(last.headers["webhook-signature"].split(" ")) == 1
            last.verify(new)
            with pytest.raises(WebhookVerificationError):
                Webhook(old).verify(last.body, last.headers)


async def test_redis_killed_and_started_again_mid_delivery_loses_nothing(
    webhook_app: AppFactory, private_redis: Any
) -> None:
    with running_receiver("fail") as receiver:
        async with webhook_app(redis_url=private_redis.url) as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                endpoint_id, secret = await add_endpoint(admin, receiver.url)
                _, public_id = await published_form(admin)
                await submit(app, public_id)
                # The deliveries exist and are being retried against a failing receiver.
                await eventually(lambda: _failed_with(app, endpoint_id, 500))
                private_redis.kill()
                await submit(app, public_id)  # stored with its outbox row, Redis away
                await asyncio.sleep(0.5)
                private_redis.restart()
                receiver.set_mode("ok")
                await eventually(got(receiver, 3), timeout_s=40)
                await eventually(lambda: _all_sent(app, 3), timeout_s=40)
                unique = receiver.unique()
                assert sorted(c.verify(secret)["type"] for c in unique.values()) == [
                    "form.published",
                    "response.submitted",
                    "response.submitted",
                ]


async def test_two_dispatchers_on_one_database_send_every_delivery_once(
    webhook_app: AppFactory, receiver: Receiver
) -> None:
    # A deadline no call reaches even on a loaded machine: a second copy on the wire
    # could then only come from two dispatchers claiming one delivery.
    async with webhook_app(webhook_timeout_s=20.0) as app:
        state = app.state.hf
        second = WebhookDispatcher(state.settings, state.db, state.keys, state.metrics)
        await second.start()
        try:
            org = await create_organization(state.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                _, secret = await add_endpoint(admin, receiver.url)
                _, public_id = await published_form(admin)
                await asyncio.gather(*(submit(app, public_id, f"Patient {i}") for i in range(12)))
                await eventually(got(receiver, 13), timeout_s=40)
                await eventually(lambda: _all_sent(app, 13))
        finally:
            await second.stop()
        calls = receiver.received()
        assert len(calls) == 13 and len(receiver.unique()) == 13  # claims are exclusive
        for call in calls:
            call.verify(secret)
        assert {d.attempts for d in await webhook_deliveries(app)} == {1}


async def test_a_process_stopped_mid_call_leaves_the_call_to_be_made_again_with_the_same_id(
    webhook_app: AppFactory, fresh_database_url: str
) -> None:
    """At least once: the receiver may see the event twice, under one webhook-id."""
    with running_receiver("hang") as receiver:
        async with webhook_app(webhook_timeout_s=4.0) as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                endpoint_id, secret = await add_endpoint(admin, receiver.url)
                await admin.post(f"/api/webhooks/{endpoint_id}/test")

                async def held() -> bool:
                    return receiver.hanging == 1

                await eventually(held)
        # The app stopped with the call in flight: the delivery is left leased.
        receiver.set_mode("ok")
        async with webhook_app(webhook_timeout_s=1.0) as app:
            (left,) = await webhook_deliveries(app)
            assert left.status == "sending"
            await eventually(lambda: _has_status(app, endpoint_id, "sent"), timeout_s=60)
        calls = receiver.received()
        assert len(calls) >= 2 and len(receiver.unique()) == 1
        for call in calls:
            assert call.verify(secret)["type"] == "webhook.test"
