"""One webhook call: pinned to the checked address, bounded in time and size.

- The connection goes to the address the SSRF check passed (addresses.py), with the
  URL's host in `Host` and as the TLS server name, so the certificate is checked for
  that name and a DNS answer that changed since cannot redirect the call.
- Connect timeout, and one deadline for the whole call; the answer's body is read up
  to MAX_BODY and then dropped; redirects are not followed (a 3xx is a failure); no
  proxies from the environment; no connection kept alive.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from healthforms.health.routes import package_version
from healthforms.webhooks.addresses import IPAddress, Policy, Target, UnsafeUrl, parse_url

MAX_BODY = 64 * 1024
USER_AGENT = f"healthforms-webhooks/{package_version()}"


@dataclass(frozen=True, slots=True)
class CallResult:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None  # the failure's class ("ReadTimeout", "HTTP 500"), never a body


def build_client(
    connect_timeout_s: float, timeout_s: float, ca_file: Path | None = None
) -> httpx.AsyncClient:
    verify = ssl.create_default_context()
    if ca_file is not None:
        verify.load_verify_locations(cafile=str(ca_file))
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=0),
    )


def _pinned_url(target: Target, address: IPAddress) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{target.scheme}://{host}:{target.port}{target.path}"


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


async def call(
    client: httpx.AsyncClient,
    policy: Policy,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout_s: float,
) -> CallResult:
    started = time.monotonic()

    def result(ok: bool, status: int | None, error: str | None) -> CallResult:
        return CallResult(ok, status, int((time.monotonic() - started) * 1000), error)

    try:
        target = parse_url(url, production=policy.production)
        addresses = await policy.check(target)
    except UnsafeUrl:
        return result(False, None, "UnsafeUrl")
    request_headers = {
        **headers,
        "Host": _host_header(target),
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with asyncio.timeout(timeout_s):
            response = None
            for number, address in enumerate(addresses, 1):
                request = client.build_request(
                    "POST",
                    _pinned_url(target, address),
                    headers=request_headers,
                    content=body,
                    extensions=extensions,
                )
                try:
                    response = await client.send(request, stream=True)
                    break
                except httpx.ConnectError:
                    if number == len(addresses):
                        raise  # else the host's next address (e.g. ::1, then 127.0.0.1)
            assert response is not None
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_BODY:
                        break  # enough: the rest is dropped with the connection
            finally:
                await response.aclose()
    except TimeoutError:
        return result(False, None, "Timeout")
    except httpx.HTTPError as exc:
        return result(False, None, type(exc).__name__)
    except OSError as exc:
        return result(False, None, type(exc).__name__)
    status = response.status_code
    if 200 <= status < 300:
        return result(True, status, None)
    if 300 <= status < 400:
        return result(False, status, f"Redirect {status} (not followed)")
    return result(False, status, f"HTTP {status}")
