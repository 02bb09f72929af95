"""Alerts without PHI: a new response reaches its form's subscribers by email (a real
SMTP server) and as an unread count, through the outbox: database row in the
response's transaction → Redis Stream → consumer group → delivery, once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from healthforms.alerts.service import outbox_handlers
from healthforms.email.messages import message_id
from healthforms.outbox.models import Delivery
from healthforms.outbox.worker import STREAM, OutboxWorker
from healthforms.security.principal import Role
from tests.outbox.conftest import (
    MARKER,
    AppFactory,
    all_handled,
    delivery_statuses,
    eventually,
    published_form,
    submit,
    wait_for_mail,
)
from tests.support.response_factory import create_organization
from tests.support.servers import REPO_ROOT
from tests.support.smtp import SmtpServer
from tests.support.staff import signed_in_client


async def test_subscribers_get_an_email_without_phi_and_an_unread_alert(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(**smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with (
            signed_in_client(app, org, Role.EDITOR) as (builder, builder_staff),
            signed_in_client(app, org, Role.VIEWER) as (colleague, colleague_staff),
            signed_in_client(app, org, Role.VIEWER) as (bystander, _),
        ):
            form_id, public_id = await published_form(builder)
            # The builder is subscribed by creating it; a colleague opts in.
            assert (await builder.get(f"/api/forms/{form_id}/alerts")).json() == {
                "subscribed": True,
                "email": True,
            }
            joined = await colleague.put(f"/api/forms/{form_id}/alerts")
            assert joined.json()["subscribed"] is True
            code = await submit(app, public_id)

            got = await wait_for_mail(smtp, 2)
            assert sorted(r for m in got for r in m.recipients) == sorted(
                [builder_staff.email, colleague_staff.email]
            )
            for mail in got:
                assert mail.message["Subject"] == "A new response to Knee pain intake"
                assert f"https://forms.clinic.example/forms/{form_id}/responses" in mail.text
                # No answer, no name, no confirmation code: nothing about the patient.
                for secret in (MARKER, "Sore knee", code):
                    assert secret not in mail.text
            assert len({m.message_id for m in got}) == 2

            alerts = (await colleague.get("/api/alerts")).json()
            assert alerts["unread"] == 1
            (alert,) = alerts["alerts"]
            assert alert["formId"] == form_id and alert["formTitle"] == "Knee pain intake"
            assert alert["read"] is False
            read = await colleague.post("/api/alerts/read", json={"ids": [alert["id"]]})
            assert read.json() == {"unread": 0}
            assert (await builder.get("/api/alerts")).json()["unread"] == 1  # their own
            assert (await bystander.get("/api/alerts")).json()["unread"] == 0
            bodies: list[object] = [{}, {"ids": []}, {"ids": "x"}, {"all": False}, [], {"ids": [1]}]
            for bad in bodies:
                refused = await colleague.post("/api/alerts/read", json=bad)
                assert refused.status_code == 422, bad

            # Leaving: the next response alerts only the builder.
            await colleague.delete(f"/api/forms/{form_id}/alerts")
            await submit(app, public_id, name="Second Patient")
            got = await wait_for_mail(smtp, 3)
            assert got[-1].recipients == [builder_staff.email]
            await eventually(lambda: all_handled(app))
        redis: Redis = app.state.hf.redis.client
        ttl = await redis.ttl(app.state.hf.redis.key(STREAM))
        assert 0 < ttl <= 7 * 24 * 3600  # every key has a TTL, the stream too


async def test_without_smtp_the_alert_is_an_unread_count_only(outbox_app: AppFactory) -> None:
    async with outbox_app() as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (builder, _):
            form_id, public_id = await published_form(builder)
            assert (await builder.get(f"/api/forms/{form_id}/alerts")).json()["email"] is False
            await submit(app, public_id)

            async def unread() -> int:
                return int((await builder.get("/api/alerts")).json()["unread"])

            assert await eventually(unread) == 1
            page = await builder.get("/forms")
            assert 'data-unread="1"' in page.text
        assert await delivery_statuses(app) == []


async def test_a_response_stored_while_redis_is_down_alerts_once_when_it_returns(
    outbox_app: AppFactory, smtp: SmtpServer, private_redis: Any
) -> None:
    async with outbox_app(redis_url=private_redis.url, **smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (builder, _):
            form_id, public_id = await published_form(builder)
            private_redis.kill()
            await submit(app, public_id)  # degraded, but stored with its outbox row
            await asyncio.sleep(1.5)
            assert smtp.received == []
            private_redis.restart()
            got = await wait_for_mail(smtp, 1, timeout_s=30)
            await eventually(lambda: all_handled(app), timeout_s=30)
            await asyncio.sleep(1.5)  # a reclaim round: nothing is sent again
            assert len(smtp.received) == 1 and got[0].message["Subject"].endswith("intake")
            assert await delivery_statuses(app) == ["sent"]


async def test_a_refusing_relay_is_retried_then_dead_lettered_and_redelivered(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(outbox_max_attempts=3, **smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            form_id, public_id = await published_form(admin)
            smtp.refuse_next(2)  # two temporary failures, then accepted
            await submit(app, public_id)
            await wait_for_mail(smtp, 1, timeout_s=30)

            async def sent() -> bool:
                return await delivery_statuses(app) == ["sent"]

            await eventually(sent)
            async with app.state.hf.db.sessions() as session:
                (delivery,) = (await session.execute(select(Delivery))).scalars()
            assert delivery.attempts == 3

            smtp.refuse_always(True)
            await submit(app, public_id, name="Another Patient")

            async def dead() -> list[dict[str, Any]]:
                listed = await admin.get("/api/admin/deliveries")
                return list(listed.json()["deliveries"])

            (letter,) = await eventually(dead, timeout_s=30)
            assert letter["attempts"] == 3 and letter["lastError"] == "SMTPRecipientsRefused"
            assert MARKER not in str(letter)
            smtp.refuse_always(False)
            again = await admin.post(f"/api/admin/deliveries/{letter['id']}/redeliver")
            assert again.status_code == 202
            await wait_for_mail(smtp, 2, timeout_s=30)
            missing = await admin.post(f"/api/admin/deliveries/{letter['id']}/redeliver")
            assert missing.status_code == 404  # no longer dead
        async with signed_in_client(app, org, Role.EDITOR) as (editor, _):
            assert (await editor.get("/api/admin/deliveries")).status_code == 403


async def test_two_workers_send_every_alert_exactly_once(
    outbox_app: AppFactory, smtp: SmtpServer
) -> None:
    async with outbox_app(**smtp.settings()) as app:
        state = app.state.hf
        second = OutboxWorker(
            state.settings, state.db, state.redis, state.metrics, outbox_handlers()
        )
        second.start()
        try:
            org = await create_organization(state.db)
            async with signed_in_client(app, org, Role.EDITOR) as (builder, _):
                _, public_id = await published_form(builder)
                await asyncio.gather(*(submit(app, public_id, f"Patient {i}") for i in range(12)))
                got = await wait_for_mail(smtp, 12, timeout_s=60)
                await eventually(lambda: all_handled(app), timeout_s=30)
                await asyncio.sleep(2.5)  # reclaim rounds of both workers
        finally:
            await second.stop()
        ids = [m.message_id for m in smtp.received]
        assert len(ids) == 12 and len(set(ids)) == 12, len(got)


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "healthforms", "outbox", "work"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_a_worker_killed_mid_send_leaves_exactly_one_email(
    outbox_app: AppFactory,
    smtp: SmtpServer,
    fresh_database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """The in-app worker is off; a `healthforms outbox work` process sends. It is
    SIGKILLed while the relay holds its RCPT; a second process takes the entry over
    (XAUTOCLAIM) and sends it: one message arrives, with the delivery's Message-ID."""
    async with outbox_app(outbox_worker=False, **smtp.settings()) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.EDITOR) as (builder, _):
            _, public_id = await published_form(builder)
        env = {
            **os.environ,
            "DATABASE_URL": fresh_database_url,
            "REDIS_URL": redis_url,
            "HEALTHFORMS_REDIS_PREFIX": redis_prefix,
            "HEALTHFORMS_ENCRYPTION_KEY": app.state.hf.settings.encryption_key.get_secret_value(),
            "HEALTHFORMS_DATA_DIR": str(tmp_path / "worker-data"),
            **smtp.env(),
            "HEALTHFORMS_OUTBOX_POLL": "0.1",
            "HEALTHFORMS_OUTBOX_RECLAIM": "1",
            "HEALTHFORMS_SMTP_TIMEOUT": "5",
            "HEALTHFORMS_ENV": "development",
        }
        release = smtp.stall_recipients()
        first = _worker(env, tmp_path / "worker1.log")
        try:
            await submit(app, public_id)
            stalled = await asyncio.to_thread(smtp.handler.stalled.wait, 30)
            assert stalled, (tmp_path / "worker1.log").read_text()
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        smtp.stop_stalling()
        release.set()
        assert smtp.received == []
        second = _worker(env, tmp_path / "worker2.log")
        try:
            got = await wait_for_mail(smtp, 1, timeout_s=40)
            await eventually(lambda: all_handled(app), timeout_s=30)
            await asyncio.sleep(2.5)  # reclaim rounds: nothing is sent twice
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(15)
            except subprocess.TimeoutExpired:
                second.kill()
        assert len(smtp.received) == 1, (tmp_path / "worker2.log").read_text()
        async with app.state.hf.db.sessions() as session:
            (delivery,) = (await session.execute(select(Delivery))).scalars()
        assert delivery.status == "sent" and delivery.attempts == 2
        # The idempotency key a receiver de-duplicates on: the delivery's own Message-ID.
        assert got[0].message_id == message_id(delivery.id, "127.0.0.1")
