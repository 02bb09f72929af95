"""The `healthforms` command: serve, migrate, check, keys, user, audit, purge."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from healthforms.alerts.service import outbox_handlers
from healthforms.audit.checkpoints import CheckpointFile, read_checkpoints, write_checkpoint
from healthforms.audit.events import (
    SESSION_REVOKED,
    USER_CREATED,
    USER_PASSWORD_RESET,
    USER_TOTP_RESET,
    AuditEvent,
)
from healthforms.audit.store import (
    ChainHead,
    Verification,
    append_event,
    export_events,
    export_json,
    take_touched_chains,
    verify_chains,
)
from healthforms.backup.sealing import BackupKeyError, generate_backup_key, load_backup_key
from healthforms.backup.service import BackupFailed, restore_backup, take_backup
from healthforms.clock import parse_rfc3339, rfc3339
from healthforms.config import ConfigError, Settings, load_settings
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.engine import Database, DatabaseUnavailable
from healthforms.db.migrate import (
    current_revision,
    grant_app_role,
    head_revision,
    upgrade,
    upgrade_in_thread,
)
from healthforms.errors import ValidationFailed
from healthforms.fhir.response import webhook_body_source
from healthforms.health.routes import eviction_warnings
from healthforms.identity.login import failure_key
from healthforms.identity.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    generated_password,
)
from healthforms.identity.schemas import check_email
from healthforms.identity.service import (
    EmailTaken,
    create_user,
    find_users_by_email,
    get_or_create_organization,
    organization_names,
    reset_password,
    reset_totp,
)
from healthforms.logs import configure_logging
from healthforms.metrics import Metrics, write_job_metrics
from healthforms.outbox.worker import OutboxWorker
from healthforms.patient_requests.models import PatientRequest
from healthforms.patient_requests.notify import request_handlers
from healthforms.redis.client import build_redis
from healthforms.redis.embedded import EmbeddedServerError, open_embedded_redis
from healthforms.redis.errors import RedisUnavailable
from healthforms.responses.key_rotation import rotate_keys
from healthforms.responses.reindex import reindex_patients
from healthforms.retention.service import PURGE_BATCH, FormPurge, count_expired, purge_expired
from healthforms.security.principal import Role
from healthforms.security.sessions import SessionStore
from healthforms.submissions.drafts.service import sweep_expired as sweep_expired_drafts
from healthforms.uploads.models import UploadBlob
from healthforms.webhooks.dispatcher import WebhookDispatcher
from healthforms.webhooks.models import WebhookEndpoint
from healthforms.webhooks.service import fan_out as webhook_fan_out

app = typer.Typer(
    help="healthforms: HIPAA-minded forms platform for clinics.", no_args_is_help=True
)
keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
responses_app = typer.Typer(help="Patients' responses.", no_args_is_help=True)
app.add_typer(responses_app, name="responses")
outbox_app = typer.Typer(help="Alerts and other messages on their way out.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


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
    for warning in settings.startup_warnings():
        typer.echo(f"WARNING: {warning.message}", err=True)  # logged by each worker too
    embedded = None
    try:
        if settings.uses_embedded_redis:
            # One server for every worker: owned and supervised here; the workers find
            # it by the data directory and share it.
            embedded = open_embedded_redis(settings)
            embedded.supervise()
        if settings.database_url is None:
            upgrade(settings.resolved_database_url())
        KeyRing.from_settings(settings)  # create the embedded key file once, before workers
        if workers > 1:
            # One scrape of /metrics must see every worker (metrics.py): each records
            # into this directory, fresh for this server (a dead run's counts would add).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_metrics_dir(settings, port))
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
            embedded.close()


def fresh_metrics_dir(settings: Settings, port: int) -> Path:
    """An empty directory, private to this server (host name and port: instances may
    share a data volume), for the workers' metrics."""
    name = f"serve-{socket.gethostname()}-{port}".replace("/", "_")
    path = (settings.data_dir / "metrics" / name).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    return path


@app.command()
def migrate(
    app_role: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL: create/refresh this role for the service to connect as: "
            "read-write on every table, INSERT/SELECT only on the audit trail."
        ),
    ] = None,
) -> None:
    """Bring the database schema up to date."""

    settings = _settings()
    url = settings.resolved_database_url()
    upgrade(url)
    typer.echo(f"database schema at {head_revision()}")
    if app_role is not None:
        try:
            grant_app_role(url, app_role)
        except ValueError as exc:
            typer.echo(f"error: --app-role: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"role {app_role}: read-write on the tables, INSERT/SELECT only on audit_events "
            "(set its password with ALTER ROLE; connect the service as it)"
        )


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
        # Beside a running server, use its Valkey: never a second one on its socket.
        embedded = open_embedded_redis(settings)
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
        where = redis.target.url
        if embedded is not None:
            where += (
                " (embedded)"
                if embedded.is_owner
                else f" (embedded, run by healthforms process {embedded.owner_pid})"
            )
        typer.echo(f"redis: ok: {kind} {version} at {where}, maxmemory-policy {policy}")
        for warning in eviction_warnings(policy):
            typer.echo(f"redis: WARNING: {warning}")
    except RedisUnavailable as exc:
        typer.echo(f"redis: FAILED: {redis.target.url}: {exc}")
        ok = False
    finally:
        await redis.close()
        if embedded is not None:
            embedded.close()  # stops the server only if this command started it

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


@keys_app.command("backup-keypair")
def keys_backup_keypair(
    out: Annotated[
        Path, typer.Option(help="Write the PRIVATE backup key here (0600; keep it offline).")
    ],
) -> None:
    """Make a backup key pair: the private key goes to --out, the public key is printed
    (give it to the servers as HEALTHFORMS_BACKUP_KEY; it can back up, not restore)."""
    if out.exists():
        typer.echo(f"error: {out} exists; not overwriting a key", err=True)
        raise typer.Exit(2)
    key = generate_backup_key()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        typer.echo(f"error: {out}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key.private_text() + "\n")
    typer.echo(key.public_text)
    typer.echo(f"backup key {key.key_id}: private key written to {out}", err=True)


@app.command()
def backup(
    out: Annotated[Path, typer.Option("--out", help="The encrypted backup file to write.")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="The backup key (public is enough) (default: HEALTHFORMS_BACKUP_KEY, "
            "or the file HEALTHFORMS_BACKUP_KEY_FILE names)."
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="On success, also write healthforms_backup_last_success_timestamp_seconds "
            "here for node_exporter's textfile collector (the RPO alert reads it)."
        ),
    ] = None,
) -> None:
    """Write a consistent, encrypted snapshot of the database and the audit checkpoints
    (docs/backup.md). The master encryption key is never in it. Exit 0 when written."""
    settings = _settings()
    try:
        key = load_backup_key(key_file)
    except BackupKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = asyncio.run(take_backup(settings, out, key))
    except BackupFailed as exc:
        typer.echo(f"backup: error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    except OSError as exc:  # the output directory, the data directory
        typer.echo(f"backup: error: {exc.filename or out}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    for line in result.lines():
        typer.echo(line)
    if metrics_file is not None:
        write_job_metrics(
            metrics_file,
            {
                "healthforms_backup_last_success_timestamp_seconds": time.time(),
                "healthforms_backup_size_bytes": result.size,
            },
        )


@app.command()
def restore(
    in_: Annotated[Path, typer.Option("--in", help="The encrypted backup file.")],
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="The FRESH database to restore into (an absent SQLite file, or an empty "
            "PostgreSQL database); never the configured one by default.",
        ),
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="The PRIVATE backup key (default: HEALTHFORMS_BACKUP_KEY, or the file "
            "HEALTHFORMS_BACKUP_KEY_FILE names)."
        ),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Where `audit verify` will read checkpoints (default: "
            "HEALTHFORMS_AUDIT_CHECKPOINT_PATH, or the data directory's)."
        ),
    ] = None,
) -> None:
    """Restore a backup into a fresh database and check it: every part against the
    manifest, then rows per table, schema revision, audit chain heads, and that every
    sealed record opens under the master key. Exit 0 when all hold, 1 when the archive is
    refused or a check fails, 2 for a usage error (no key, a target that is not empty)."""
    settings = _settings()
    try:
        key = load_backup_key(key_file)
        key.private_text()  # restoring needs the private half: say so before any work
    except BackupKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    path = checkpoints or settings.resolved_audit_checkpoint_path()
    try:
        result = asyncio.run(
            restore_backup(settings, in_, key, database_url, checkpoints=path, say=typer.echo)
        )
    except BackupFailed as exc:
        typer.echo(f"restore: error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    except OSError as exc:  # the work directory, the checkpoint file
        typer.echo(f"restore: error: {exc.filename or in_}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    if result.failed:
        raise typer.Exit(1)
    typer.echo("restore: ok: now run `healthforms audit verify`")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Sign-in email (unique in its organisation).")],
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
                typer.echo("error: a user with this email already exists there", err=True)
                return 1
        await append_event(
            db,
            KeyRing.from_settings(settings),
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


def _new_password(password: str | None) -> tuple[str, bool]:
    """The password to set, and whether it was generated (then printed once): --password,
    else typed at a prompt (empty: generate), else, with no terminal, generated."""
    if password is None and sys.stdin.isatty():
        typed = typer.prompt(
            "New password (empty: generate one)",
            default="",
            show_default=False,
            hide_input=True,
            confirmation_prompt=True,
        )
        password = str(typed) or None
    if password is None:
        return generated_password(), True
    return password, False


@user_app.command("reset-password")
def user_reset_password(
    email: Annotated[str, typer.Option(help="The account's sign-in email.")],
    password: Annotated[
        str | None,
        typer.Option(
            help="New password (at least 8 characters); when absent, prompted for, or "
            "generated and printed once."
        ),
    ] = None,
    organization: Annotated[
        str | None,
        typer.Option(help="The account's organisation, when several have this email."),
    ] = None,
) -> None:
    """Set a new password for a staff account (recovery) and end all of its sessions."""

    checked_email = _checked_email(email)
    new_password, generated = _new_password(password)
    if not MIN_PASSWORD_LENGTH <= len(new_password) <= MAX_PASSWORD_LENGTH:
        typer.echo(f"error: the password needs at least {MIN_PASSWORD_LENGTH} characters", err=True)
        raise typer.Exit(2)
    code = asyncio.run(_user_reset(_settings(), checked_email, organization, new_password))
    if code == 0 and generated:
        typer.echo(f"new password (shown once, pass it on privately): {new_password}")
    raise typer.Exit(code)


@user_app.command("reset-totp")
def user_reset_totp(
    email: Annotated[str, typer.Option(help="The account's sign-in email.")],
    organization: Annotated[
        str | None,
        typer.Option(help="The account's organisation, when several have this email."),
    ] = None,
) -> None:
    """Remove two-step sign-in (TOTP and recovery codes) from a staff account (a lost
    phone) and end all of its sessions."""

    code = asyncio.run(_user_reset(_settings(), _checked_email(email), organization, None))
    raise typer.Exit(code)


def _checked_email(email: str) -> str:
    try:
        return check_email(email)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _user_reset(
    settings: Settings, email: str, organization: str | None, password: str | None
) -> int:
    """Reset the password (`password` given) or the two-step sign-in of one account;
    audited with no actor (the shell); 1 when no single account matches."""

    db_url = settings.resolved_database_url()
    if settings.database_url is None:
        upgrade_in_thread(db_url)  # the embedded default: make sure the schema exists
    keys = KeyRing.from_settings(settings)
    db = Database.connect(db_url)
    try:
        async with db.sessions() as session:
            users = await find_users_by_email(session, email, limit=1000)
            names = await organization_names(session, [u.organization_id for u in users])
            if organization is not None:
                wanted = organization.strip()
                users = [u for u in users if names.get(u.organization_id) == wanted]
            if not users:
                where = " in that organisation" if organization is not None else ""
                typer.echo(f"error: no user with this email{where}", err=True)
                return 1
            if len(users) > 1:
                listed = ", ".join(sorted(names.get(u.organization_id, "?") for u in users))
                typer.echo(
                    f"error: users with this email in several organisations ({listed}): "
                    "name one with --organization",
                    err=True,
                )
                return 1
            user = users[0]
            if password is not None:
                await reset_password(session, user, password)
                action, done = USER_PASSWORD_RESET, "password reset"
            else:
                await reset_totp(session, user)
                action, done = USER_TOTP_RESET, "two-step sign-in removed"
            user_id, organization_id = user.id, user.organization_id
        for name in (action, SESSION_REVOKED):
            await append_event(
                db,
                keys,
                AuditEvent(
                    action=name,
                    organization_id=organization_id,
                    resource_type="user",
                    resource_id=user_id,
                ),
            )
        note = await _end_in_redis(settings, keys, user_id, email)
        typer.echo(f"user {user_id}: {done}; every session ended{note}")
        return 0
    finally:
        await db.dispose()


async def _end_in_redis(settings: Settings, keys: KeyRing, user_id: str, email: str) -> str:
    """End the user's sessions in Redis and lift the email's sign-in lock. The database
    already voids the sessions (a running service refuses them from its record within
    seconds), so Redis being away is a note, not a failure."""

    embedded = None
    url = settings.explicit_redis_url()
    try:
        if url is None:
            embedded = open_embedded_redis(settings)  # a running server's, never a second
            url = embedded.url
    except (EmbeddedServerError, OSError):
        return _REDIS_AWAY
    redis = build_redis(settings, url, embedded=embedded is not None)
    try:
        await SessionStore(redis, settings, keys.hmac_key("session")).end_all(user_id)
        key = failure_key(redis, keys, email)
        await redis.call(lambda r: r.delete(key), idempotent=True)
        return ""
    except RedisUnavailable:
        return _REDIS_AWAY
    finally:
        await redis.close()
        if embedded is not None:
            embedded.close()


_REDIS_AWAY = (
    " (Redis did not answer: the service refuses the old sessions from the database "
    "within seconds; a sign-in lock, if any, runs out by itself)"
)


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint file to compare the chain heads with "
            "(default: HEALTHFORMS_AUDIT_CHECKPOINT_PATH, or the data directory's)."
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="Also write the result here for node_exporter's textfile collector "
            "(healthforms_audit_verify_ok, ..._last_run_timestamp_seconds)."
        ),
    ] = None,
) -> None:
    """Check every chain's MACs and links, and the heads against the signed
    checkpoints; exit 0 when intact, 1 naming each broken chain."""
    settings = _settings()
    path = checkpoints or settings.resolved_audit_checkpoint_path()
    keys = KeyRing.from_settings(settings)
    trusted = read_checkpoints(keys, path)
    result = asyncio.run(_audit_verify(settings, keys, trusted))
    if metrics_file is not None:
        write_job_metrics(
            metrics_file,
            {
                "healthforms_audit_verify_ok": int(result.intact and not trusted.rejected),
                "healthforms_audit_verify_events": result.checked,
                "healthforms_audit_verify_last_run_timestamp_seconds": time.time(),
            },
        )
    for number, reason in trusted.rejected:
        typer.echo(f"audit: checkpoint {path} line {number}: {reason}")
    if not trusted.heads:
        typer.echo(
            f"audit: warning: no checkpoints in {path}: removal of the newest events "
            "cannot be detected"
        )
    if result.intact and not trusted.rejected:
        typer.echo(
            f"audit: ok: {result.checked} events in {result.chains} chains, MACs and links "
            f"intact, {result.checkpoints} checkpoints matched"
        )
        raise typer.Exit(0)
    for broken in result.breaks:
        typer.echo(f"audit: BROKEN: {broken.describe()}")
    raise typer.Exit(1)


async def _audit_verify(settings: Settings, keys: KeyRing, trusted: CheckpointFile) -> Verification:
    db = Database.connect(settings.resolved_database_url())
    try:
        return await verify_chains(db, keys, trusted.heads)
    finally:
        await db.dispose()


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Write a signed checkpoint of every chain head now (the service writes one every
    HEALTHFORMS_AUDIT_CHECKPOINT_INTERVAL seconds by itself)."""
    settings = _settings()
    configure_logging(settings.log_level)
    path = settings.resolved_audit_checkpoint_path()
    written = asyncio.run(_audit_checkpoint(settings, path))
    typer.echo(f"audit: {len(written)} chain head(s) checkpointed to {path}")


async def _audit_checkpoint(settings: Settings, path: Path) -> list[ChainHead]:
    db = Database.connect(settings.resolved_database_url())
    try:
        return await write_checkpoint(db, KeyRing.from_settings(settings), path)
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
        counts = await rotate_keys(
            db,
            keys,
            batch=batch_size,
            also=(
                PatientRequest,
                UploadBlob,
                (WebhookEndpoint, "secret_"),
                (WebhookEndpoint, "previous_"),
            ),
        )
    finally:
        await db.dispose()
    for count in counts:
        typer.echo(count.line())
    failed = sum(c.failed for c in counts)
    if failed:
        typer.echo(f"error: {failed} record(s) could not be re-wrapped (see the log)", err=True)
    return failed == 0


@responses_app.command("reindex")
def responses_reindex(
    form: Annotated[str | None, typer.Option(help="Only this form's responses (its id).")] = None,
) -> None:
    """Rebuild whose response it is (the patient's name and date of birth, and the
    blind indexes staff search by) from the answers, after a form marked the fields
    that identify the patient. Audited; safe to run again. Exits 1 when a response
    does not decrypt."""
    settings = _settings()
    ok = asyncio.run(_responses_reindex(settings, form))
    raise typer.Exit(0 if ok else 1)


async def _responses_reindex(settings: Settings, form_id: str | None) -> bool:
    db = Database.connect(settings.resolved_database_url())
    try:
        count = await reindex_patients(db, KeyRing.from_settings(settings), form_id=form_id)
    finally:
        await db.dispose()
    typer.echo(count.line())
    if count.failed:
        typer.echo(f"error: {count.failed} response(s) could not be decrypted", err=True)
    return count.failed == 0


@outbox_app.command("work")
def outbox_work() -> None:
    """Run the outbox worker in the foreground until SIGTERM or Ctrl-C: carries messages
    from the database to the Redis stream, sends alerts, retries, reclaims what a dead
    worker left. `serve` runs one itself unless HEALTHFORMS_OUTBOX_WORKER=false; run
    this for workers of their own. Needs REDIS_URL (or REDIS_ADDR)."""
    settings = _settings()
    url = settings.explicit_redis_url()
    if url is None:
        typer.echo("error: outbox work needs REDIS_URL (or REDIS_ADDR)", err=True)
        raise typer.Exit(2)
    asyncio.run(_outbox_work(settings, url))


async def _outbox_work(settings: Settings, url: str) -> None:
    db = Database.connect(settings.resolved_database_url())
    redis = build_redis(settings, url, embedded=False)
    redis.start_probe()
    keys = KeyRing.from_settings(settings)
    handlers = {**outbox_handlers(), **request_handlers(keys)}
    metrics = Metrics()
    webhooks = WebhookDispatcher(
        settings,
        db,
        keys,
        metrics,
        body_source=webhook_body_source(settings.public_base),
    )
    await webhooks.start()
    worker = OutboxWorker(
        settings,
        db,
        redis,
        metrics,
        handlers,
        fan_outs=[webhook_fan_out],
        on_fanned_out=webhooks.signal.nudge,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker.start()
    typer.echo(f"outbox worker {worker.consumer} running")
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await webhooks.stop()
        await redis.close()
        await db.dispose()


@app.command()
def purge(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print how many responses each form would lose; delete nothing."
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(min=1, max=10_000, help="Responses per transaction (each with its event)."),
    ] = PURGE_BATCH,
) -> None:
    """Delete the responses older than their form's retention period, with their PDFs
    and notes; each batch commits with a `responses.purged` audit event (ids and counts,
    no PHI). The service runs this daily by itself. Exits 0 when done (also when nothing
    had expired), 1 when a form could not be purged (run it again: it is idempotent)."""
    settings = _settings()
    configure_logging(settings.log_level)
    raise typer.Exit(asyncio.run(_purge(settings, dry_run, batch_size)))


async def _purge(settings: Settings, dry_run: bool, batch_size: int) -> int:
    db_url = settings.resolved_database_url()
    if settings.database_url is None:
        upgrade_in_thread(db_url)  # the embedded default: make sure the schema exists
    db = Database.connect(db_url)
    drafts_swept = 0
    try:
        if dry_run:
            results = await count_expired(db)
        else:
            keys = KeyRing.from_settings(settings)
            results = await purge_expired(db, keys, batch=batch_size)
            # Expired drafts of patients (submissions/drafts/) go in the same run.
            drafts_swept = await sweep_expired_drafts(db, keys, batch=batch_size)
            await _checkpoint_purge_events(settings, db, keys)
    except (SQLAlchemyError, DatabaseUnavailable, OSError) as exc:
        typer.echo(f"error: database: {type(exc).__name__}", err=True)
        return 1
    finally:
        await db.dispose()
    head = "purge (dry run)" if dry_run else "purge"
    done = "would be purged" if dry_run else "purged"
    for result in results:
        if result.count or result.failed:
            typer.echo(f"{head}: {_form_line(result)} {done}")
        if result.failed:
            typer.echo(
                f"error: form {result.form.form_id}: stopped by {result.failed} "
                "(the batch rolled back with its event; run purge again)",
                err=True,
            )
    total = sum(r.count for r in results)
    forms = sum(1 for r in results if r.count)
    typer.echo(
        f"{head}: {total} response(s) of {forms} form(s) {done}"
        + ("; nothing was deleted" if dry_run else "")
        + f" ({len(results)} form(s) have a retention period)"
    )
    if not dry_run and drafts_swept:
        typer.echo(f"{head}: {drafts_swept} expired draft(s) deleted")
    return 1 if any(r.failed for r in results) else 0


def _form_line(result: FormPurge) -> str:
    form = result.form
    return (
        f"form {form.form_id} (organisation {form.organization_id}, kept "
        f"{form.retention_days} days): {result.count} response(s) submitted before "
        f"{rfc3339(form.before)}"
    )


async def _checkpoint_purge_events(settings: Settings, db: Database, keys: KeyRing) -> None:
    """Checkpoint the chains the purge appended to at once: removing its events from the
    end of a chain is then detected by `audit verify` (the service would checkpoint
    them only when it next writes to those chains)."""
    chains = take_touched_chains()
    if not chains:
        return
    path = settings.resolved_audit_checkpoint_path()
    try:
        await write_checkpoint(db, keys, path, chains=chains)
    except OSError as exc:
        typer.echo(
            f"audit: warning: could not write the checkpoint to {path} ({exc.strerror}); "
            "run `healthforms audit checkpoint`",
            err=True,
        )


def main() -> None:  # pragma: no cover
    app(prog_name="healthforms")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
