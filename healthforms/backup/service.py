"""`healthforms backup` and `healthforms restore`: one encrypted file per backup.

A backup is a tar (gzip) of
  database.sqlite3 | database.pgdump   a consistent snapshot (database.py)
  audit-checkpoints.jsonl              the checkpoint file as it was before the snapshot
  audit-heads.jsonl                    the snapshot's chain heads, signed as checkpoints
  manifest.json                        format, versions, schema revision, rows per table,
                                       chain heads, the parts' SHA-256 (written last)
sealed to the operator's backup key (sealing.py). The master encryption key is never
in it: the responses stay sealed under it inside the snapshot, so restoring needs both
the backup's private key and the master key, kept apart.

Restore goes into a fresh database only (an absent or empty SQLite file, a PostgreSQL
database with no tables): it never merges into or overwrites live data. It checks
every part's hash against the manifest before touching the target, and afterwards the
restored rows per table, the schema revision and the audit chain heads against the
manifest, and that every sealed record (answers, notes, identities, scores, PDFs,
drafts, uploads, patient requests) opens under the configured master key.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import select

from healthforms.audit.checkpoints import checkpoint_line
from healthforms.audit.store import ChainHead
from healthforms.backup import database as dbsnap
from healthforms.backup.sealing import BackupKey, open_stream, seal_stream
from healthforms.clock import rfc3339, utcnow
from healthforms.config import Settings, decode_key
from healthforms.crypto.envelope import (
    DecryptionFailed,
    Sealed,
    draft_aad,
    identity_aad,
    note_aad,
    open_sealed,
    pdf_aad,
    request_aad,
    response_aad,
    scores_aad,
    upload_aad,
)
from healthforms.crypto.keys import KEY_FILE_NAME, KeyRing
from healthforms.db.engine import Database, backend_name
from healthforms.files import private_file
from healthforms.patient_requests.models import PatientRequest
from healthforms.responses.models import (
    ResponseIdentity,
    ResponseNote,
    ResponsePdf,
    ResponseRow,
    ResponseScores,
)
from healthforms.submissions.drafts.models import FormDraft
from healthforms.uploads.models import UploadBlob
from healthforms.webhooks.models import WebhookEndpoint
from healthforms.webhooks.service import secret_aad

FORMAT = "healthforms-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNATURE_PURPOSE = "backup-manifest"
CHECKPOINTS = "audit-checkpoints.jsonl"
HEADS = "audit-heads.jsonl"
DATABASE_PART = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
_PARTS = {MANIFEST, SIGNATURE, CHECKPOINTS, HEADS, *DATABASE_PART.values()}
_MAX_MANIFEST = 16 * 1024 * 1024


class BackupFailed(Exception):
    """Stop with this message (safe to print) and exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def tool_version() -> str:
    try:
        return metadata.version("healthforms")
    except metadata.PackageNotFoundError:
        return "0.0.0+source"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _heads_json(heads: list[ChainHead]) -> list[dict[str, object]]:
    return [{"chain": h.chain, "seq": h.seq, "hash": h.hash} for h in heads]


@dataclass
class BackupResult:
    path: Path
    size: int
    manifest: dict[str, Any]

    def lines(self) -> list[str]:
        m = self.manifest
        rows = sum(m["counts"].values())
        return [
            f"backup: wrote {self.path} ({self.size} bytes)",
            f"backup: {m['backend']} schema {m['schemaRevision']}, {len(m['counts'])} tables, "
            f"{rows} rows, {len(m['auditHeads'])} audit chain(s)",
            f"backup: encrypted to backup key {m['backupKeyId']}; restoring also needs the "
            f"master encryption key {m['masterKeyId']} (not in the archive)",
        ]


async def take_backup(settings: Settings, out: Path, key: BackupKey) -> BackupResult:
    """Snapshot the configured database into an encrypted archive at `out` (written
    beside it, then renamed: a failed backup leaves no partial file under that name)."""
    url = settings.resolved_database_url()
    backend = backend_name(url)
    out = out.resolve()
    work = dbsnap.private_workdir(out.parent)
    try:
        # The checkpoint file first: every head it names is then in the snapshot
        # (the chains only grow), so `audit verify` after a restore compares cleanly.
        checkpoints = settings.resolved_audit_checkpoint_path()
        kept = work / CHECKPOINTS
        private_file(kept)
        if checkpoints.is_file():
            shutil.copyfile(checkpoints, kept)
        part = work / DATABASE_PART[backend]
        try:
            if backend == "sqlite":
                figures = await asyncio.to_thread(dbsnap.snapshot_sqlite, url, part)
            else:
                figures = await dbsnap.snapshot_postgres(url, part, work)
        except dbsnap.SnapshotError as exc:
            raise BackupFailed(str(exc)) from None
        keys = KeyRing.from_settings(settings)  # after the snapshot: none minted for nothing
        at = rfc3339(utcnow())
        heads = work / HEADS
        private_file(heads)
        heads.write_text(
            "".join(
                json.dumps(checkpoint_line(keys, h, at), separators=(",", ":")) + "\n"
                for h in figures.heads
            )
        )
        parts = {
            p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in (part, kept, heads)
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "formatVersion": FORMAT_VERSION,
            "createdAt": at,
            "toolVersion": tool_version(),
            "backend": backend,
            "schemaRevision": figures.revision,
            "counts": figures.counts,
            "auditHeads": _heads_json(figures.heads),
            "masterKeyId": keys.current_id,
            "backupKeyId": key.key_id,
            "parts": parts,
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        (work / MANIFEST).write_bytes(manifest_bytes)
        (work / SIGNATURE).write_text(json.dumps(_signature(keys, manifest_bytes)))
        archive = work / "archive.tar.gz"
        private_file(archive)
        with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name in (*parts, MANIFEST, SIGNATURE):
                tar.add(work / name, arcname=name, recursive=False, filter=_anonymous)
        partial = out.with_name(f".{out.name}.partial")
        private_file(partial)
        with archive.open("rb") as source, partial.open("wb") as target:
            seal_stream(source, target, key)
            target.flush()
            os.fsync(target.fileno())
        os.replace(partial, out)
        return BackupResult(path=out, size=out.stat().st_size, manifest=manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _signature(keys: KeyRing, manifest: bytes) -> dict[str, str]:
    """The manifest MACed with a key derived from the master key. The backup key's
    public half is meant to be widely held (every server), so anyone holding it can
    seal an archive; this MAC is what shows the archive came from a healthforms holding
    the master key, not a forger."""
    mac = hmac.new(keys.hmac_key(SIGNATURE_PURPOSE), manifest, hashlib.sha256).hexdigest()
    return {"keyId": keys.current_id, "mac": mac}


def _check_signature(keys: KeyRing, manifest: bytes, signature: Path) -> None:
    try:
        found = json.loads(signature.read_text())
        kid, mac = str(found["keyId"]), str(found["mac"])
    except (ValueError, KeyError, TypeError):
        raise BackupFailed("refused: the manifest's signature is unreadable") from None
    key = keys.hmac_key_for(kid, SIGNATURE_PURPOSE)
    if key is None:
        raise BackupFailed(
            f"refused: the manifest is signed under master key {kid}, which is not "
            "configured (set HEALTHFORMS_ENCRYPTION_KEY, or list it in "
            "HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS)",
            2,
        )
    expected = hmac.new(key, manifest, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise BackupFailed("refused: the manifest's signature is invalid (forged or edited)")


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


@dataclass
class RestoreResult:
    manifest: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    failed: bool = False


def _open_archive(archive: Path, key: BackupKey, keys: KeyRing, work: Path) -> dict[str, Any]:
    """Decrypt and unpack into `work`; return the manifest once its signature checks
    and every part matches it."""
    plain = work / "archive.tar.gz"
    private_file(plain)
    try:
        with archive.open("rb") as source, plain.open("wb") as target:
            open_stream(source, target, key)
    except OSError as exc:
        raise BackupFailed(f"cannot read {archive}: {exc.strerror}", 2) from None
    except ValueError as exc:  # SealedStreamError, BackupKeyError
        raise BackupFailed(f"refused: {exc}") from None
    found: dict[str, Path] = {}
    try:
        with tarfile.open(plain, "r:gz") as tar:
            for member in tar:
                # Only the parts this format has, as plain files: no path, link or device
                # in a hostile archive reaches the file system.
                if member.name not in _PARTS or not member.isfile() or member.name in found:
                    raise BackupFailed(f"refused: unexpected entry in the archive: {member.name!r}")
                extracted = tar.extractfile(member)
                assert extracted is not None
                target_path = work / member.name
                private_file(target_path)
                with target_path.open("wb") as handle:
                    shutil.copyfileobj(extracted, handle)
                found[member.name] = target_path
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BackupFailed(
            f"refused: the archive's content is damaged ({type(exc).__name__})"
        ) from None
    if MANIFEST not in found or found[MANIFEST].stat().st_size > _MAX_MANIFEST:
        raise BackupFailed("refused: the archive has no manifest")
    if SIGNATURE not in found:
        raise BackupFailed("refused: the manifest is not signed")
    manifest_bytes = found[MANIFEST].read_bytes()
    _check_signature(keys, manifest_bytes, found[SIGNATURE])
    try:
        manifest = json.loads(manifest_bytes)
        if manifest.get("format") != FORMAT:
            raise ValueError("format")
        parts: dict[str, dict[str, Any]] = manifest["parts"]
    except (ValueError, KeyError, TypeError):
        raise BackupFailed("refused: the manifest is not a healthforms backup manifest") from None
    if manifest.get("formatVersion") != FORMAT_VERSION:
        raise BackupFailed(
            f"refused: backup format version {manifest.get('formatVersion')!r}; this "
            f"healthforms reads version {FORMAT_VERSION}"
        )
    if set(parts) != set(found) - {MANIFEST, SIGNATURE}:
        raise BackupFailed("refused: the archive's parts do not match its manifest")
    for name, expected in parts.items():
        path = found[name]
        if path.stat().st_size != expected.get("bytes") or _sha256(path) != expected.get("sha256"):
            raise BackupFailed(f"refused: {name} does not match its hash in the manifest")
    return dict(manifest)


def _master_keys(settings: Settings) -> KeyRing | None:
    """The configured master keys, without ever creating a key file (a restore on a new
    machine must not mint a key the data was never sealed with)."""
    if settings.encryption_key is None and not (settings.data_dir / KEY_FILE_NAME).is_file():
        return None
    if settings.encryption_key is None:
        path = settings.data_dir / KEY_FILE_NAME
        return KeyRing(current=decode_key(path.read_text().strip(), str(path)))
    return KeyRing.from_settings(settings)


# Every sealed kind of record and its AAD (crypto/envelope.py): a restore proves that each
# one opens under the configured master key, not only the answers.
# A webhook endpoint keeps its secrets in prefixed columns (the current one and, for a
# day after a rotation, the previous one: empty otherwise).
_SEALED: tuple[tuple[str, Any, tuple[str, ...], Callable[..., bytes], str], ...] = (
    ("responses", ResponseRow, ("id", "form_id"), response_aad, ""),
    ("notes", ResponseNote, ("id", "response_id"), note_aad, ""),
    ("patient identities", ResponseIdentity, ("response_id",), identity_aad, ""),
    ("scores", ResponseScores, ("response_id",), scores_aad, ""),
    ("PDFs", ResponsePdf, ("response_id",), pdf_aad, ""),
    ("drafts", FormDraft, ("id", "form_id"), draft_aad, ""),
    ("uploads", UploadBlob, ("upload_id",), upload_aad, ""),
    ("patient requests", PatientRequest, ("id",), request_aad, ""),
    ("webhook secrets", WebhookEndpoint, ("id",), secret_aad, "secret_"),
    ("previous webhook secrets", WebhookEndpoint, ("id",), secret_aad, "previous_"),
)


async def check_sealed(url: str, keys: KeyRing) -> dict[str, tuple[int, int]]:
    """Per kind of sealed record: (opened, failed) under `keys`."""
    db = Database.connect(url)
    found: dict[str, tuple[int, int]] = {}
    try:
        async with db.sessions() as session:
            for name, model, columns, aad, prefix in _SEALED:
                opened = failed = 0
                ciphertext_column = getattr(model, f"{prefix}ciphertext")
                query = (
                    select(
                        ciphertext_column,
                        getattr(model, f"{prefix}wrapped_key"),
                        getattr(model, f"{prefix}key_id"),
                        *(getattr(model, c) for c in columns),
                    )
                    .where(ciphertext_column.is_not(None))
                    .execution_options(yield_per=200)
                )
                async for ciphertext, wrapped, kid, *ids in await session.stream(query):
                    try:
                        open_sealed(keys, Sealed(ciphertext, wrapped, kid), aad(*ids))
                        opened += 1
                    except DecryptionFailed:
                        failed += 1
                found[name] = (opened, failed)
    finally:
        await db.dispose()
    return found


async def restore_backup(
    settings: Settings,
    archive: Path,
    key: BackupKey,
    target_url: str,
    *,
    checkpoints: Path,
    say: Callable[[str], None],
) -> RestoreResult:
    backend = backend_name(target_url)
    try:
        busy = (
            await asyncio.to_thread(dbsnap.sqlite_target_in_use, target_url)
            if backend == "sqlite"
            else await dbsnap.postgres_target_in_use(target_url)
        )
    except dbsnap.SnapshotError as exc:
        raise BackupFailed(str(exc), 2) from None
    if busy is not None:
        raise BackupFailed(
            f"refused: restore goes into a fresh database only ({busy}); create an empty "
            "one and name it with --database-url",
            2,
        )
    keys = _master_keys(settings)
    if keys is None:
        raise BackupFailed(
            "the master encryption key is not configured: set HEALTHFORMS_ENCRYPTION_KEY "
            "(or put the key file in the data directory) before restoring; the backup "
            "does not contain it",
            2,
        )
    work = Path(tempfile.mkdtemp(prefix="healthforms-restore-"))  # 0700
    try:
        manifest = await asyncio.to_thread(_open_archive, archive, key, keys, work)
        say(
            f"restore: archive ok: {manifest['backend']} backup of {manifest['createdAt']}, "
            f"schema {manifest['schemaRevision']}, manifest signed under master key "
            f"{manifest['masterKeyId']}, every part matches it"
        )
        if manifest["backend"] != backend:
            raise BackupFailed(
                f"refused: this is a {manifest['backend']} backup; restore it into a "
                f"{manifest['backend']} database (cross-engine restore is not supported)",
                2,
            )
        part = work / DATABASE_PART[backend]
        try:
            if backend == "sqlite":
                await asyncio.to_thread(dbsnap.restore_sqlite, part, target_url)
            else:
                await dbsnap.restore_postgres(part, target_url, work)
        except dbsnap.SnapshotError as exc:
            raise BackupFailed(str(exc)) from None
        result = RestoreResult(manifest=manifest)
        figures = await dbsnap.read_figures(target_url)
        _compare(manifest, figures, result, say)
        _restore_checkpoints(work, checkpoints, say)
        sealed = await check_sealed(target_url, keys)
        broken = {name: f for name, (_, f) in sealed.items() if f}
        if broken:
            result.failed = True
            listed = ", ".join(f"{f} {name}" for name, f in broken.items())
            say(
                f"restore: FAILED: {listed} do not open under the configured master key "
                f"(the backup was taken under {manifest['masterKeyId']})"
            )
        else:
            listed = ", ".join(f"{opened} {name}" for name, (opened, _) in sealed.items())
            say(f"restore: every sealed record opens under the configured master key: {listed}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(
    manifest: dict[str, Any],
    figures: dbsnap.Figures,
    result: RestoreResult,
    say: Callable[[str], None],
) -> None:
    expected: dict[str, int] = manifest["counts"]
    wrong = sorted(
        t for t in set(expected) | set(figures.counts) if expected.get(t) != figures.counts.get(t)
    )
    if wrong:
        result.failed = True
        say(f"restore: FAILED: row counts differ from the manifest in: {', '.join(wrong)}")
    else:
        rows = sum(expected.values())
        say(f"restore: row counts match the manifest ({len(expected)} tables, {rows} rows)")
    if figures.revision != manifest["schemaRevision"]:
        result.failed = True
        say(
            f"restore: FAILED: schema revision {figures.revision}, "
            f"manifest says {manifest['schemaRevision']}"
        )
    heads = _heads_json(figures.heads)
    if sorted(heads, key=str) != sorted(manifest["auditHeads"], key=str):
        result.failed = True
        say("restore: FAILED: the audit chain heads differ from the manifest")
    else:
        say(f"restore: audit chain heads match the manifest ({len(heads)} chain(s))")


def _restore_checkpoints(work: Path, checkpoints: Path, say: Callable[[str], None]) -> None:
    """Give `audit verify` the backup's checkpoints when the deployment has none (a new
    machine); never rewrite an existing file (it is evidence: heads in it beyond the
    backup are the events lost since, and `audit verify` names them)."""
    if checkpoints.is_file() and checkpoints.stat().st_size > 0:
        say(
            f"restore: kept the existing checkpoint file {checkpoints}; `audit verify` "
            "reports any checkpointed event newer than the backup as missing (events "
            "lost since the backup)"
        )
        return
    private_file(checkpoints)
    data = io.BytesIO()
    for name in (CHECKPOINTS, HEADS):
        data.write((work / name).read_bytes())
    with checkpoints.open("ab") as handle:
        handle.write(data.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    say(f"restore: wrote the backup's audit checkpoints to {checkpoints}")
