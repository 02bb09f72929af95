"""Bounded soak: minutes of mixed load from 1,000 distinct signed-in users on two servers.

Afterwards: Redis holds only keys with a TTL and no more of them than the load could
have made; its memory grew with those keys only; the app processes hold no more file
descriptors or sockets than after warm-up; no error-level line reached the logs; no
5xx; every accepted submission is stored exactly once.

SOAK_SECONDS (default 30, CI) sets the length; SOAK_SECONDS=300 is the full soak.
SOAK_USERS (default 1000) sets how many distinct users hold sessions. Their sessions are
started by the real session store in this process (one Redis script each), because a
thousand argon2 sign-ins would cost minutes of CPU; a share of sign-ins still goes
through POST /api/auth/session-login during the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import workflow
from tests.support.cluster import (
    Cluster,
    LoadRun,
    assert_accepted_exactly_once,
    assert_every_answer_had_a_body,
    assert_no_server_errors_outside,
    private_cluster,
    summary,
)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
SOAK_USERS = int(os.environ.get("SOAK_USERS", "1000"))
HTTP_LOGINS = 20

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.soak,
    pytest.mark.multiprocess,
    pytest.mark.timeout(SOAK_SECONDS + 240),
]


async def _mint_users_and_sessions(cluster: Cluster, count: int) -> list[dict[str, str]]:
    """`count` users in the admin's organisation, each with a live session (real code)."""
    try:
        from healthforms.identity.models import User
        from healthforms.identity.passwords import hash_password
        from healthforms.security.principal import Role
    except ImportError as exc:
        raise workflow.FeatureMissing(f"identity session store ({exc.name})") from exc
    from sqlalchemy import select

    from healthforms.app import create_app
    from tests.conftest import make_settings

    assert cluster.admin is not None
    settings = make_settings(
        database_url=cluster.database_url,
        redis_url=cluster.redis.url,
        redis_prefix=cluster.env.get("HEALTHFORMS_REDIS_PREFIX", "hf:"),
        data_dir=Path(cluster.env["HEALTHFORMS_DATA_DIR"]),
        encryption_key=cluster.env["HEALTHFORMS_ENCRYPTION_KEY"],
    )
    app = create_app(settings)
    cookies: list[dict[str, str]] = []
    async with app.router.lifespan_context(app):
        state = app.state.hf
        store = state.sessions
        # One hash for all: each argon2 hash carries its own salt, and these accounts
        # only need to exist; the sign-in path is exercised by the HTTP logins.
        password_hash = hash_password(workflow.PASSWORD)
        async with state.db.sessions() as db, db.begin():
            admin = (
                await db.execute(select(User).where(User.id == cluster.admin.user_id))
            ).scalar_one()
            users = [
                User(
                    organization_id=admin.organization_id,
                    email=f"soak-{index}-{secrets.token_hex(3)}@soak.example",
                    name=f"Soak {index}",
                    role=Role.VIEWER.value,
                    password_hash=password_hash,
                )
                for index in range(count)
            ]
            db.add_all(users)
        for user in users:
            value, _, _ = await store.create(
                user_id=user.id,
                organization_id=user.organization_id,
                role=Role(user.role),
                auth_method="password",
                mfa=False,
                ip="127.0.0.1",
                user_agent="soak",
            )
            cookies.append({"cookie": f"{settings.session_cookie_name}={value}", "csrf": ""})
    return cookies


def _fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process."""
    fd_dir = Path(f"/proc/{pid}/fd")
    total = sockets = 0
    for entry in fd_dir.iterdir():
        total += 1
        try:
            if os.readlink(entry).startswith("socket:"):
                sockets += 1
        except OSError:
            continue
    return total, sockets


def _redis_figures(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}


def _keys_without_ttl(client: redis.Redis) -> tuple[int, list[str]]:
    checked = 0
    missing: list[str] = []
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.pttl(key)
        for key, ttl in zip(batch, pipe.execute(), strict=True):
            if ttl == -1:
                missing.append(key.decode(errors="replace"))
        batch.clear()

    for key in client.scan_iter(count=1000):
        checked += 1
        batch.append(key)
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    return checked, missing


def _error_lines(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            try:
                record: dict[str, Any] = json.loads(stripped)
            except ValueError:
                continue
            if str(record.get("level", "")).lower() in ("error", "critical", "exception"):
                bad.append(stripped[:300])
        elif stripped.startswith(("ERROR", "CRITICAL", "Traceback")):
            bad.append(stripped[:300])
    return bad


def test_soak_with_a_thousand_users_stays_bounded(tmp_path: Path) -> None:
    with private_cluster(tmp_path) as cluster:
        try:
            cluster.bootstrap(forms=2, staff=2)
            sessions = asyncio.run(_mint_users_and_sessions(cluster, SOAK_USERS))
            logins = []
            for index in range(HTTP_LOGINS):
                email = f"soak-login-{index}@soak.example"
                workflow.create_user(cluster.urls[index % 2], cluster.admin, email, "viewer")  # type: ignore[arg-type]
                logins.append({"email": email, "password": workflow.PASSWORD})
        except workflow.FeatureMissing as exc:
            pytest.skip(f"needs a feature not merged on this branch yet: {exc}")
        client = redis.Redis.from_url(cluster.redis.url)
        try:
            config = cluster.load_config(
                duration_s=SOAK_SECONDS,
                max_requests=int(SOAK_SECONDS * 400),
                concurrency=10,
                rate_per_s=100.0,
                sessions=sessions,
                logins=logins,
                mix={"public": 0.35, "me": 0.3, "forms": 0.25, "health": 0.1},
            )
            load = LoadRun(config, tmp_path / "load")
            warm_up = min(20.0, SOAK_SECONDS / 4)
            time.sleep(warm_up)
            warm_fds = {server.port: _fds(server.process.pid) for server in cluster.servers}
            warm_redis = _redis_figures(client)
            samples = [warm_redis]
            while load.process.poll() is None:
                time.sleep(5)
                samples.append(_redis_figures(client))
            result = load.wait()
            time.sleep(1.0)  # let in-flight connections close
            end_fds = {server.port: _fds(server.process.pid) for server in cluster.servers}
            end_redis = _redis_figures(client)
            checked, no_ttl = _keys_without_ttl(client)
        finally:
            client.close()
        print(summary(result))
        print(f"fds warm {warm_fds} end {end_fds}; redis warm {warm_redis} end {end_redis}")

        assert_every_answer_had_a_body(result)
        assert_no_server_errors_outside(result, statuses=(500, 502, 503, 504))
        figures = assert_accepted_exactly_once(
            result, cluster.database_url, [form.id for form in cluster.forms]
        )
        print(figures)
        me_ok = result["counts"].get("me 200", 0)
        assert me_ok > 0, f"no authenticated request succeeded: {result['counts']}"
        assert len(result["sessions_made"]) >= HTTP_LOGINS // 2, "HTTP sign-ins failed"

        # Every key expires by itself.
        assert not no_ttl, f"{len(no_ttl)} of {checked} keys have no TTL: {no_ttl[:10]}"
        # No more keys than the work could make: sessions (+ index, csrf tokens, bucket
        # per user), a nonce per public fetch, buckets per IP, locks and fences.
        fetches = sum(v for k, v in result["counts"].items() if k.startswith("public_fetch"))
        users = len(sessions) + len(result["sessions_made"]) + 3
        bound = 5 * users + fetches + 200
        assert end_redis["keys"] <= bound, f"{end_redis['keys']} keys > bound {bound}"
        # Memory grows with those keys only (a generous 2 KiB each), never on its own.
        grown = end_redis["used_memory"] - warm_redis["used_memory"]
        new_keys = max(0, end_redis["keys"] - warm_redis["keys"])
        assert grown <= new_keys * 2048 + 4 * 1024 * 1024, (grown, new_keys, samples)

        # No descriptor or connection growth in the app processes after warm-up.
        for port, (warm_total, warm_sockets) in warm_fds.items():
            end_total, end_sockets = end_fds[port]
            assert end_total <= warm_total + 12, (port, warm_fds, end_fds)
            assert end_sockets <= warm_sockets + 12, (port, warm_fds, end_fds)

        errors = _error_lines(cluster.logs())
        assert not errors, f"error-level log lines: {errors[:5]}"
