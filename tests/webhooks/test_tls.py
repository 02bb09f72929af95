"""https receivers: the call is pinned to the checked address yet the certificate is
checked for the URL's host name; the QuestionnaireResponse body (from the pluggable
body source) reaches only an https endpoint that opted in, confirmed."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from healthforms.crypto.keys import KeyRing
from healthforms.security.principal import Role
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
    receiver, ca_file = tls_receiver
    async with webhook_app(webhook_ca_file=ca_file) as app:
        asked: list[str] = []

        async def source(session: Any, keys: KeyRing, org_id: str, rid: str) -> dict[str, Any]:
            asked.append(rid)
            return {"resourceType": "QuestionnaireResponse", "id": rid, "status": "completed"}

        app.state.webhooks.body_source = source  # what app.py wires to the FHIR export
        org = await create_organization(app.state.hf.db)
        async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
            _, secret = await add_endpoint(
                admin, receiver.url, ["response.submitted", "form.published"],
                fhirBody=True, confirmPhi=True,
            )  # fmt: skip
            _, public_id = await published_form(admin)
            await submit(app, public_id)

            async def both() -> bool:
                return len(receiver.unique()) == 2

            await eventually(both)
        documents = {c.verify(secret)["type"]: c.verify(secret) for c in receiver.received()}
        submitted = documents["response.submitted"]["data"]
        assert submitted["questionnaireResponse"] == {
            "resourceType": "QuestionnaireResponse",
            "id": submitted["responseId"],
            "status": "completed",
        }
        assert asked == [submitted["responseId"]]
        assert "questionnaireResponse" not in documents["form.published"]["data"]
        assert all(c.headers["host"] == f"localhost:{receiver.port}" for c in receiver.received())


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
