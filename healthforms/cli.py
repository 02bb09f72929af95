"""The `healthforms` command: serve, migrate, check, keys, user, audit."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Annotated

import typer
import uvicorn

from healthforms.audit.events import USER_CREATED, AuditEvent
from healthforms.audit.store import (
    ChainBreak,
    append_event,
    export_events,
    export_json,
    verify_chain,
)
from healthforms.clock import parse_rfc3339
from healthforms.config import ConfigError, Settings, load_settings
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.engine import Database, DatabaseUnavailable
from healthforms.db.migrate import current_revision, head_revision, upgrade, upgrade_in_thread
from healthforms.errors import ValidationFailed
from healthforms.health.routes import eviction_warnings
from healthforms.identity.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from healthforms.identity.schemas import check_email
from healthforms.identity.service import EmailTaken, create_user, get_or_create_organization
from healthforms.logs import configure_logging
from healthforms.redis.client import build_redis
from healthforms.redis.embedded import start_embedded_redis
from healthforms.redis.errors import RedisUnavailable
from healthforms.responses.key_rotation import rotate_keys
from healthforms.security.principal import Role

app = typer.Typer(
    help="healthforms: HIPAA-minded forms platform for clinics.", no_args_is_help=True
)
keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Run the service (embedded Valkey + SQLite when nothing is configured)."""

    settings = _settings()
    configure_logging(settings.log_level)
    embedded = None
    try:
        if settings.uses_embedded_redis:
            # One server for every worker: started here, handed to them by URL.
            embedded = start_embedded_redis(settings)
            os.environ["REDIS_URL"] = embedded.url
        if settings.database_url is None:
            upgrade(settings.resolved_database_url())
        KeyRing.from_settings(settings)  # create the embedded key file once, before workers
        uvicorn.run(
            "healthforms.app:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,  # uvicorn logs through our JSON handler (logs.py)
            proxy_headers=False,  # X-Forwarded-For is judged by our trusted-proxy rules
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if embedded is not None:
            embedded.stop()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""

    settings = _settings()
    upgrade(settings.resolved_database_url())
    typer.echo(f"database schema at {head_revision()}")


@app.command()
def check() -> None:
    """Connect to Redis and the database; print what was found; exit 0 only if both answer."""

    settings = _settings()
    configure_logging(settings.log_level)
    ok = asyncio.run(_check(settings))
    raise typer.Exit(0 if ok else 1)


async def _check(settings: Settings) -> bool:

    ok = True
    embedded = None
    url = settings.explicit_redis_url()
    if url is None:
        embedded = start_embedded_redis(settings)
        url = embedded.url
    redis = build_redis(settings, url, embedded=embedded is not None)
    try:
        info = await redis.call(lambda r: r.info("server"), idempotent=True)
        memory = await redis.call(lambda r: r.info("memory"), idempotent=True)
        kind = (
            "valkey" if "valkey_version" in info or info.get("server_name") == "valkey" else "redis"
        )
        version = info.get("valkey_version") or info.get("redis_version", "?")
        policy = str(memory.get("maxmemory_policy", "unknown"))
        where = redis.target.url + (" (embedded)" if embedded else "")
        typer.echo(f"redis: ok: {kind} {version} at {where}, maxmemory-policy {policy}")
        for warning in eviction_warnings(policy):
            typer.echo(f"redis: WARNING: {warning}")
    except RedisUnavailable as exc:
        typer.echo(f"redis: FAILED: {redis.target.url}: {exc}")
        ok = False
    finally:
        await redis.close()
        if embedded is not None:
            embedded.stop()

    db_url = settings.resolved_database_url()
    db = Database.connect(db_url)
    try:
        version = await db.ping(timeout_s=5)
        current = await current_revision(db_url)
        head = head_revision()
        state = "at head" if current == head else f"at {current or 'nothing'}, head is {head}"
        typer.echo(f"database: ok: {db.backend} {version}, migrations {state} ({head})")
        if current != head:
            typer.echo("database: run `healthforms migrate`")
            ok = False
    except DatabaseUnavailable as exc:
        typer.echo(f"database: FAILED: {db.backend}: {exc}")
        if str(exc) == "database file missing":
            typer.echo("database: run `healthforms migrate` (or `healthforms serve`) to create it")
        ok = False
    finally:
        await db.dispose()
    return ok


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new master encryption key (32 random bytes, base64)."""

    typer.echo(generate_key())


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Sign-in email (unique).")],
    password: Annotated[str, typer.Option(help="Password (at least 8 characters).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    organization: Annotated[str, typer.Option(help="Organisation; created if new.")],
    role: Annotated[str, typer.Option(help="admin | editor | viewer.")] = "viewer",
) -> None:
    """Create a staff user (and the organisation, if it does not exist yet)."""

    try:
        checked_email = check_email(email)
        checked_role = Role(role.strip().lower())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        typer.echo(f"error: the password needs at least {MIN_PASSWORD_LENGTH} characters", err=True)
        raise typer.Exit(2)
    if not name.strip() or not organization.strip():
        typer.echo("error: --name and --organization must not be empty", err=True)
        raise typer.Exit(2)
    code = asyncio.run(
        _user_create(_settings(), checked_email, password, name, organization, checked_role)
    )
    raise typer.Exit(code)


async def _user_create(
    settings: Settings, email: str, password: str, name: str, organization: str, role: Role
) -> int:

    db_url = settings.resolved_database_url()
    if settings.database_url is None:
        upgrade_in_thread(db_url)  # the embedded default: make sure the schema exists
    db = Database.connect(db_url)
    try:
        async with db.sessions() as session:
            org, created = await get_or_create_organization(session, organization)
            try:
                user = await create_user(
                    session,
                    organization_id=org.id,
                    email=email,
                    name=name,
                    password=password,
                    role=role,
                )
            except EmailTaken:
                typer.echo("error: a user with this email already exists", err=True)
                return 1
        await append_event(
            db,
            AuditEvent(
                action=USER_CREATED,
                organization_id=org.id,
                resource_type="user",
                resource_id=user.id,
            ),
        )
        made = "created" if created else "existing"
        typer.echo(f"user {user.id} ({role.value}) in {made} organisation {org.id}")
        return 0
    finally:
        await db.dispose()


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 0 when intact, 1 naming the first broken event."""
    settings = _settings()
    checked, broken = asyncio.run(_audit_verify(settings))
    if broken is None:
        typer.echo(f"audit: ok: {checked} events, hash chain intact")
        raise typer.Exit(0)
    typer.echo(
        f"audit: BROKEN at event {broken.event_id}: {broken.reason} "
        f"({checked} events before it are intact)"
    )
    raise typer.Exit(1)


async def _audit_verify(settings: Settings) -> tuple[int, ChainBreak | None]:

    db = Database.connect(settings.resolved_database_url())
    try:
        return await verify_chain(db)
    finally:
        await db.dispose()


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this RFC 3339 time.")
    ] = None,
) -> None:
    """Print events as JSON lines, oldest first (every organisation)."""

    settings = _settings()
    try:
        since_at = parse_rfc3339(since, "--since") if since else None
    except ValidationFailed as exc:
        typer.echo(f"error: --since {exc.extra['fields']['--since']}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(_audit_export(settings, since_at))


async def _audit_export(settings: Settings, since: datetime | None) -> None:

    db = Database.connect(settings.resolved_database_url())
    try:
        async for row in export_events(db, since=since):
            sys.stdout.write(json.dumps(export_json(row), separators=(",", ":")) + "\n")
    finally:
        await db.dispose()
    sys.stdout.flush()


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 500,
) -> None:
    """Re-wrap every data key under HEALTHFORMS_ENCRYPTION_KEY (no downtime).

    Put the new key in HEALTHFORMS_ENCRYPTION_KEY and the old one(s) in
    HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS (comma-separated), on every instance and
    here; reads keep working throughout. Safe to run again. Exits 1 when a record
    could not be re-wrapped (its key is not configured, or it was altered).
    """
    ok = asyncio.run(_keys_rotate(_settings(), batch_size))
    raise typer.Exit(0 if ok else 1)


async def _keys_rotate(settings: Settings, batch_size: int) -> bool:

    keys = KeyRing.from_settings(settings)
    typer.echo(f"current key: {keys.current_id}")
    if not keys.previous:
        typer.echo(
            "note: HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS is empty; "
            "records under any other key will fail"
        )
    db = Database.connect(settings.resolved_database_url())
    try:
        counts = await rotate_keys(db, keys, batch=batch_size)
    finally:
        await db.dispose()
    for count in counts:
        typer.echo(count.line())
    failed = sum(c.failed for c in counts)
    if failed:
        typer.echo(f"error: {failed} record(s) could not be re-wrapped (see the log)", err=True)
    return failed == 0


def main() -> None:  # pragma: no cover
    app(prog_name="healthforms")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
