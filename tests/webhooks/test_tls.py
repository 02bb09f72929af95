"""https receivers: the call is pinned to the checked address yet the certificate is
checked for the URL's host name; the QuestionnaireResponse body (from the pluggable
body source) reaches only an https endpoint that opted in, confirmed."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from healthforms.audit.events import RESPONSE_DISCLOSED
from healthforms.security.principal import Role
from tests.fhir.helpers import audit_rows, valid_response
from tests.outbox.conftest import AppFactory, eventually, published_form, submit
from tests.redis.test_client import _make_ca, _make_server_cert
from tests.support.response_factory import create_organization
from tests.support.staff import signed_in_client
from tests.webhooks.conftest import add_endpoint, webhook_deliveries
from tests.webhooks.receiver import Receiver


def _tls_receiver(tmp_path: Path, name: str) -> tuple[Receiver, Path]:
    ca_key, ca_cert = _make_ca("Clinic test CA")
    key, cert = _make_server_cert(ca_key, ca_cert, [x509.DNSName(name)])
    cert_file, key_file, ca_file = (tmp_path / f"{n}.pem" for n in ("cert", "key", "ca"))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Receiver(tls=context), ca_file


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    receiver, ca_file = _tls_receiver(tmp_path, "localhost")
    receiver.start()
    try:
        yield receiver, ca_file
    finally:
        receiver.stop()


async def test_an_opted_in_https_endpoint_gets_the_questionnaire_response(
    webhook_app: AppFactory, tls_receiver: tuple[Receiver, Path]
) -> None:
    """The body comes from the FHIR export app.py wires in (a valid R4
    QuestionnaireResponse of that response), and every call that carried it is audited
    as a disclosure, with no answer in the event."""
    receiver, ca_file = tls_receiver
    async with webhook_app(webhook_ca_file=ca_file) as app:
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            endpoint, secret = await add_endpoint(
                admin, receiver.url, ["response.submitted", "form.published"],
                fhirBody=True, confirmPhi=True,
            )  # fmt: skip
            _, public_id = await published_form(admin)
            await submit(app, public_id)

            async def both() -> bool:
                return len(receiver.unique()) == 2

            await eventually(both)
            response_id = next(
                c.verify(secret)["data"]["responseId"]
                for c in receiver.received()
                if c.verify(secret)["type"] == "response.submitted"
            )

            async def audited() -> bool:  # written once the call has answered
                return bool(await audit_rows(app.state.hf.db, RESPONSE_DISCLOSED, response_id))

            await eventually(audited)
            disclosed = await audit_rows(app.state.hf.db, RESPONSE_DISCLOSED, response_id)
        documents = {c.verify(secret)["type"]: c.verify(secret) for c in receiver.received()}
        submitted = documents["response.submitted"]["data"]
        resource = submitted["questionnaireResponse"]
        valid_response(resource)
        assert resource["resourceType"] == "QuestionnaireResponse"
        assert resource["status"] == "completed"
        assert resource["identifier"]["value"] == submitted["responseId"]
        assert "questionnaireResponse" not in documents["form.published"]["data"]
        assert all(c.headers["host"] == f"localhost:{receiver.port}" for c in receiver.received())

        assert len(disclosed) == len(
            [c for c in receiver.received() if c.verify(secret)["type"] == "response.submitted"]
        )
        event = disclosed[0]
        assert event.organization_id == org and event.outcome == "success"
        assert event.detail is not None
        detail = json.loads(event.detail)
        assert detail["endpointId"] == endpoint
        assert detail["channel"] == "webhook" and detail["status"] == 200
        assert set(detail) == {"channel", "endpointId", "webhookId", "attempt", "status"}


async def test_a_certificate_for_another_name_is_refused(
    webhook_app: AppFactory, tmp_path: Path
) -> None:
    receiver, ca_file = _tls_receiver(tmp_path, "ehr.other.example")
    receiver.start()
    try:
        async with webhook_app(webhook_ca_file=ca_file, webhook_max_attempts=2) as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                endpoint_id, _ = await add_endpoint(admin, receiver.url)
                await admin.post(f"/api/webhooks/{endpoint_id}/test")

                async def dead() -> bool:
                    return [d.status for d in await webhook_deliveries(app)] == ["dead"]

                await eventually(dead)
                log = (await admin.get(f"/api/webhooks/{endpoint_id}/deliveries")).json()
                assert {a["error"] for a in log["attempts"]} == {"ConnectError"}
        assert receiver.received() == []
    finally:
        receiver.stop()
