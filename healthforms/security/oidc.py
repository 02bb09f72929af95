"""Sign-in with an OIDC ID token (Firebase / Identity Platform / Keycloak / Entra front ends).

The token must be signed RS256 or ES256 by a key of the configured JWKS and carry the
configured issuer and audience, with exp, iat (and nbf when present) in range. The JWKS is
cached and fetched again when a token names an unknown key id, at most every
`min_refresh_s` so a flood of made-up key ids cannot turn us into a JWKS hammer. The
account is found by the token's verified email; nobody signs up this way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import structlog
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError, PyJWTError

from healthforms.config import Settings

log = structlog.get_logger("healthforms.oidc")

ALLOWED_ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}
LEEWAY_S = 30


class OidcRejected(Exception):
    """The token is not acceptable; the reason is for logs (never shown to the client)."""


class JwksCache:
    def __init__(
        self, url: str, *, ttl_s: float = 300.0, min_refresh_s: float = 10.0, timeout_s: float = 3.0
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _refresh(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
            response = await http.get(self.url)
        response.raise_for_status()
        keys: dict[str, PyJWK] = {}
        try:
            jwk_set = PyJWKSet.from_dict(response.json())
        except PyJWKSetError:
            jwk_set = None
        for key in jwk_set.keys if jwk_set is not None else []:
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys
        self._fetched_at = time.monotonic()
        self.fetches += 1

    async def key(self, kid: str) -> PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.ttl_s
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            if kid in self._keys and now - self._fetched_at <= self.ttl_s:
                return self._keys[kid]
            if now - self._fetched_at >= self.min_refresh_s or not self._keys:
                try:
                    await self._refresh()
                except (httpx.HTTPError, ValueError) as exc:
                    log.warning("jwks_fetch_failed", error_type=type(exc).__name__)
            return self._keys.get(kid)


class OidcVerifier:
    def __init__(self, issuer: str, jwks_url: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = JwksCache(jwks_url)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if every check passes; raise OidcRejected otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise OidcRejected("malformed token") from exc
        alg = header.get("alg")
        kid = header.get("kid")
        # Only the asymmetric algorithms we expect: no `none`, no HS256 with a public key.
        if alg not in ALLOWED_ALGORITHMS:
            raise OidcRejected("algorithm not allowed")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise OidcRejected("no key id")
        key = await self.jwks.key(kid)
        if key is None:
            raise OidcRejected("unknown key id")
        if key.key_type != ALLOWED_ALGORITHMS[alg]:
            raise OidcRejected("key type does not match the algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (PyJWTError, PyJWKError) as exc:
            raise OidcRejected(type(exc).__name__) from exc
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or iat > time.time() + LEEWAY_S:
            raise OidcRejected("issued in the future")
        return claims


def verified_email(claims: dict[str, Any]) -> str | None:
    """The token's email when the issuer says it is verified, else None."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(verified, str):
        verified = verified.lower() == "true"
    if not isinstance(email, str) or verified is not True:
        return None
    return email.strip().lower()


def build_oidc_verifier(settings: Settings) -> OidcVerifier | None:
    """The app's verifier, or None when no issuer is configured."""
    if not (settings.oidc_issuer and settings.oidc_jwks_url and settings.oidc_audience):
        return None
    return OidcVerifier(settings.oidc_issuer, settings.oidc_jwks_url, settings.oidc_audience)
