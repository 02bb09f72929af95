"""Sign-in with an OIDC ID token: keys made here, a JWKS served here on loopback."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.security.oidc import OidcVerifier
from tests.support.identity import Staff, create_staff, identity_settings, login, new_client

ISSUER = "https://issuer.example.test/realms/clinic"
AUDIENCE = "healthforms-web"


class JwksServer:
    """A tiny threading HTTP server answering GET /jwks with the current key set."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def publish(self, kid: str, public_key: Any) -> None:
        algorithm = RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else ECAlgorithm
        jwk = algorithm.to_jwk(public_key, as_dict=True)
        jwk.update({"kid": kid, "use": "sig"})
        self.keys.append(jwk)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish("rsa-1", rsa_key.public_key())
    server.publish("ec-1", ec_key.public_key())
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
async def oidc_app(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    jwks: JwksServer,
    redis_client: Redis,
) -> AsyncIterator[FastAPI]:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        oidc_issuer=ISSUER,
        oidc_jwks_url=jwks.url,
        oidc_audience=AUDIENCE,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(oidc_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=oidc_app, client=("203.0.113.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _claims(email: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "subject-1",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "email": email,
        "email_verified": True,
        "jti": secrets.token_hex(8),  # identity providers give every token its own id
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: Any, claims: dict[str, Any], *, kid: str = "rsa-1", alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


async def _login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/api/auth/session-login", json={"idToken": token})


async def test_a_good_rs256_token_signs_in_the_matching_user(
    oidc_app: FastAPI, http: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    staff = await create_staff(oidc_app)
    response = await _login(http, _sign(rsa_key, _claims(staff.email.upper())))
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == staff.id
    assert response.json()["csrfToken"]
    me = await http.get("/api/auth/me")
    assert me.status_code == 200


async def test_a_good_es256_token_signs_in(
    oidc_app: FastAPI, http: httpx.AsyncClient, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    staff = await create_staff(oidc_app)
    token = _sign(ec_key, _claims(staff.email), kid="ec-1", alg="ES256")
    assert (await _login(http, token)).status_code == 200


def _hs256_with(secret: bytes, claims: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC-sign with the public key (pyjwt refuses to, so by hand)."""
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(mac)}"


def _none_token(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{part(claims)}."


async def test_bad_tokens_are_refused_with_the_same_401(
    oidc_app: FastAPI,
    http: httpx.AsyncClient,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    staff = await create_staff(oidc_app)
    email = staff.email
    now = int(time.time())
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = rsa_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    cases = {
        "wrong issuer": _sign(rsa_key, _claims(email, iss="https://evil.example.test")),
        "wrong audience": _sign(rsa_key, _claims(email, aud="another-app")),
        "expired": _sign(rsa_key, _claims(email, iat=now - 3600, exp=now - 600)),
        "not yet valid": _sign(rsa_key, _claims(email, nbf=now + 600)),
        "issued in the future": _sign(rsa_key, _claims(email, iat=now + 600)),
        "no exp": _sign(rsa_key, _claims(email, exp=None)),
        "wrong key, known kid": _sign(stranger_key, _claims(email)),
        "unknown kid": _sign(stranger_key, _claims(email), kid="who-knows"),
        "alg none": _none_token(_claims(email)),
        "HS256 with the public key as secret": _hs256_with(public_pem, _claims(email)),
        "RS256 header on the EC key": _sign(rsa_key, _claims(email), kid="ec-1"),
        "email not verified": _sign(rsa_key, _claims(email, email_verified=False)),
        "no account for the email": _sign(rsa_key, _claims("nobody@example.test")),
        "garbage": "a.b.c",
    }
    for name, token in cases.items():
        response = await _login(http, token)
        assert response.status_code == 401, name
        assert response.json() == {
            "error": "Email or password is incorrect.",
            "code": "invalid_credentials",
        }, name
        assert "set-cookie" not in response.headers, name


async def test_jwks_is_cached_and_refreshed_for_an_unknown_kid(
    oidc_app: FastAPI, http: httpx.AsyncClient, jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    staff = await create_staff(oidc_app)
    for _ in range(3):
        assert (await _login(http, _sign(rsa_key, _claims(staff.email)))).status_code == 200
    assert jwks.hits == 1  # cached
    verifier = oidc_app.state.hf.oidc
    assert isinstance(verifier, OidcVerifier)
    verifier.jwks.min_refresh_s = 0.0  # the key rotation below happens "later"
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish("rsa-2", rotated.public_key())
    response = await _login(http, _sign(rotated, _claims(staff.email), kid="rsa-2"))
    assert response.status_code == 200
    assert jwks.hits == 2


async def test_unknown_kid_floods_do_not_hammer_the_jwks(
    oidc_app: FastAPI, http: httpx.AsyncClient, jwks: JwksServer
) -> None:
    staff = await create_staff(oidc_app)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(5):
        token = _sign(stranger, _claims(staff.email), kid=f"made-up-{i}")
        assert (await _login(http, token)).status_code == 401
    assert jwks.hits == 1


async def test_a_captured_id_token_cannot_be_replayed(
    oidc_app: FastAPI, http: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey, redis_client: Redis
) -> None:
    staff = await create_staff(oidc_app)
    token = _sign(rsa_key, _claims(staff.email))
    assert (await _login(http, token)).status_code == 200
    replayed = await _login(http, token)
    assert replayed.status_code == 401
    assert replayed.json()["code"] == "invalid_credentials"
    # A token without a jti is remembered whole.
    bare = _sign(rsa_key, _claims(staff.email, jti=None))
    assert (await _login(http, bare)).status_code == 200
    assert (await _login(http, bare)).status_code == 401
    # What Redis keeps: a keyed hash, with a TTL up to the token's expiry (+ leeway).
    keys = [k async for k in redis_client.scan_iter(match="*oidc:seen:*")]
    assert len(keys) == 2
    for key in keys:
        assert staff.email.encode() not in key
        assert 0 < await redis_client.pttl(key) <= (300 + 30) * 1000


async def _turn_on_totp(app: FastAPI, staff: Staff) -> str:
    async with new_client(app) as browser:
        signed = await login(browser, staff)
        started = await browser.post(
            "/api/auth/totp/enrol",
            json={"currentPassword": staff.password},
            headers=signed.csrf_headers,
        )
        secret: str = started.json()["secret"]
        confirmed = await browser.post(
            "/api/auth/totp/confirm",
            json={"code": pyotp.TOTP(secret).now()},
            headers=signed.csrf_headers,
        )
        assert confirmed.status_code == 200
        return secret


async def test_an_account_with_totp_needs_its_code_beside_the_id_token(
    oidc_app: FastAPI, http: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Decision (README, API): our TOTP is the account's second factor however the first
    # is proven; the code goes in the same body as `idToken`.
    staff = await create_staff(oidc_app)
    secret = await _turn_on_totp(oidc_app, staff)
    token = _sign(rsa_key, _claims(staff.email))
    asked = await _login(http, token)
    assert asked.status_code == 401 and asked.json()["code"] == "totp_required"
    wrong = await http.post("/api/auth/session-login", json={"idToken": token, "totp": "000000"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    # Asking for the code did not use the token up: it is sent again with the code.
    code = pyotp.TOTP(secret).at(time.time() + 30)
    ok = await http.post("/api/auth/session-login", json={"idToken": token, "totp": code})
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["id"] == staff.id
    replay = await http.post(
        "/api/auth/session-login",
        json={"idToken": token, "totp": pyotp.TOTP(secret).at(time.time() - 30)},
    )
    assert replay.status_code == 401


async def test_an_email_with_accounts_in_two_clinics_signs_in_to_neither_by_token(
    oidc_app: FastAPI, http: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    first = await create_staff(oidc_app)
    await create_staff(oidc_app, email=first.email)  # another clinic, same email
    response = await _login(http, _sign(rsa_key, _claims(first.email)))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
