"""Master keys: the encryption key ring and the HMAC keys derived from it.

One secret (HEALTHFORMS_ENCRYPTION_KEY) is configured; purpose-bound subkeys are
derived with HKDF so a session-cookie key can never be used as a nonce key. The key
id (first 8 bytes of SHA-256 of the key, hex) names a key without revealing it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthforms.config import Settings, decode_key
from healthforms.files import private_dir

KEY_FILE_NAME = "encryption.key"


def generate_key() -> str:
    """A new master key: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def load_or_create_key_file(data_dir: Path) -> bytes:
    """The embedded default's key: generated once, kept with 0600 rights in the data dir."""
    private_dir(data_dir)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        # Write a private temp file, then link it into place: link() fails if the key
        # exists, so two processes starting at once cannot both write a different key,
        # and nobody can read a half-written file.
        tmp = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    return decode_key(path.read_text().strip(), str(path))


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"healthforms/v1", info=purpose.encode("utf-8")
    ).derive(master)


@dataclass(frozen=True)
class KeyRing:
    current: bytes
    previous: tuple[bytes, ...] = ()
    _derived: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(current={self.current_id}, previous={len(self.previous)})"

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def by_id(self, kid: str) -> bytes | None:
        for key in (self.current, *self.previous):
            if key_id(key) == kid:
                return key
        return None

    def hmac_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose ("session", "csrf", "nonce", ...)."""
        cached = self._derived.get(purpose)
        if cached is None:
            cached = _derive(self.current, purpose)
            self._derived[purpose] = cached
        return cached

    def pseudonym(self, value: str) -> str:
        """A patient's IP address or user agent as a keyed hash, "h:" + 32 hex: the same
        value gives the same pseudonym (floods stay correlatable), and nobody without
        the master key can test a guessed address against it (HMAC, not a plain hash
        of the 2^32 IPv4 addresses)."""
        digest = hmac.new(self.hmac_key("client-pseudonym"), value.encode("utf-8"), "sha256")
        return "h:" + digest.hexdigest()[:32]

    def hmac_key_for(self, kid: str, purpose: str) -> bytes | None:
        """The purpose key derived from the master key `kid` (current or previous), for
        checking what an older key signed (the audit chain); None when it is not held."""
        if kid == self.current_id:
            return self.hmac_key(purpose)
        master = self.by_id(kid)
        return None if master is None else _derive(master, purpose)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        if settings.encryption_key is not None:
            current = decode_key(
                settings.encryption_key.get_secret_value(), "HEALTHFORMS_ENCRYPTION_KEY"
            )
        else:
            current = load_or_create_key_file(settings.data_dir)
        previous: list[bytes] = []
        if settings.previous_encryption_keys is not None:
            for part in settings.previous_encryption_keys.get_secret_value().split(","):
                if part.strip():
                    previous.append(decode_key(part, "HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS"))
        return cls(current=current, previous=tuple(previous))
