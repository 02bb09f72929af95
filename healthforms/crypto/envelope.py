"""Envelope encryption of PHI at rest (answers, PDFs, TOTP secrets).

Each record gets its own random 256-bit data key; the data encrypts the record with
AES-256-GCM, and the data key is itself wrapped (AES-256-GCM) by the master key,
whose id is stored beside it. The AAD binds a ciphertext to its record (e.g. the
response id and form id), so a ciphertext copied onto another row fails to decrypt.
Rotating the master key re-wraps data keys only; the records are not re-encrypted.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from healthforms.crypto.keys import KeyRing

_NONCE = 12
_WRAP_AAD = b"healthforms/data-key/v1"


class DecryptionFailed(Exception):
    """The ciphertext, its key or its AAD do not match (tampering or the wrong key)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: bytes  # nonce || AES-GCM(data key, plaintext, aad)
    wrapped_key: bytes  # nonce || AES-GCM(master key, data key)
    key_id: str  # id of the master key that wrapped the data key


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < _NONCE + 16:
        raise DecryptionFailed("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except InvalidTag as exc:
        raise DecryptionFailed("authentication failed") from exc


def seal(keys: KeyRing, plaintext: bytes, aad: bytes) -> Sealed:
    data_key = AESGCM.generate_key(bit_length=256)
    return Sealed(
        ciphertext=_encrypt(data_key, plaintext, aad),
        wrapped_key=_encrypt(keys.current, data_key, _WRAP_AAD),
        key_id=keys.current_id,
    )


def unwrap_data_key(keys: KeyRing, wrapped_key: bytes, key_id: str) -> bytes:
    master = keys.by_id(key_id)
    if master is None:
        raise DecryptionFailed(f"master key {key_id} is not configured")
    return _decrypt(master, wrapped_key, _WRAP_AAD)


def open_sealed(keys: KeyRing, sealed: Sealed, aad: bytes) -> bytes:
    data_key = unwrap_data_key(keys, sealed.wrapped_key, sealed.key_id)
    return _decrypt(data_key, sealed.ciphertext, aad)


def rewrap(keys: KeyRing, wrapped_key: bytes, key_id: str) -> tuple[bytes, str]:
    """Re-wrap a data key under the current master key (for `healthforms keys rotate`)."""
    data_key = unwrap_data_key(keys, wrapped_key, key_id)
    return _encrypt(keys.current, data_key, _WRAP_AAD), keys.current_id


def response_aad(response_id: str, form_id: str) -> bytes:
    """AAD of a response's answers: the ciphertext is bound to this response of this form."""
    return f"response:{response_id}:form:{form_id}".encode()


def note_aad(note_id: str, response_id: str) -> bytes:
    """AAD of a staff note: bound to this note on this response."""
    return f"note:{note_id}:response:{response_id}".encode()


def identity_aad(response_id: str) -> bytes:
    """AAD of the patient's identity copied from a response (responses/patients.py)."""
    return f"identity:{response_id}".encode()


def scores_aad(response_id: str) -> bytes:
    """AAD of the scores copied from a response for the responses list (responses/scores.py)."""
    return f"scores:{response_id}".encode()


def request_aad(request_id: str) -> bytes:
    """AAD of a patient request's contact (name, email, phone, prefill): bound to it."""
    return f"request:{request_id}".encode()


def upload_aad(upload_id: str) -> bytes:
    """AAD of an uploaded file's bytes (uploads/): bound to this upload."""
    return f"upload:{upload_id}".encode()


def draft_aad(draft_id: str, form_id: str) -> bytes:
    """AAD of a patient's saved draft (submissions/drafts/): bound to this draft of this form."""
    return f"draft:{draft_id}:form:{form_id}".encode()


def pdf_aad(response_id: str) -> bytes:
    return f"pdf:{response_id}".encode()


def seal_json(keys: KeyRing, payload: object, aad: bytes) -> Sealed:
    """Seal a JSON document (e.g. {"answers": {...}, "signatures": {...}})."""
    import json

    return seal(keys, json.dumps(payload, separators=(",", ":")).encode("utf-8"), aad)


def open_json(keys: KeyRing, sealed: Sealed, aad: bytes) -> object:
    import json

    return json.loads(open_sealed(keys, sealed, aad).decode("utf-8"))
