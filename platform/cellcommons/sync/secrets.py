"""Source secrets at rest: AES-GCM under a key derived from settings.secret_key, bound to the source's name.

Binding the name as associated data means a sealed value copied onto another source does not open there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cellcommons.errors import InvalidInput
from cellcommons.settings import Settings

_NONCE = 12


def _cipher(settings: Settings) -> AESGCM:
    material = b"cellcommons-sync-secrets:" + settings.secret_key.get_secret_value().encode()
    return AESGCM(hashlib.sha256(material).digest())


def seal(settings: Settings, source: str, secrets: dict[str, str]) -> str | None:
    if not secrets:
        return None
    nonce = os.urandom(_NONCE)
    sealed = _cipher(settings).encrypt(nonce, json.dumps(secrets).encode(), source.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(settings: Settings, source: str, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    raw = base64.b64decode(sealed)
    try:
        return json.loads(_cipher(settings).decrypt(raw[:_NONCE], raw[_NONCE:], source.encode()))
    except InvalidTag:
        # Wrong secret key, or the value was moved from another source: say so without showing anything.
        raise InvalidInput(f"the secrets of source {source!r} cannot be opened with this secret key",
                           field="CELLCOMMONS_SECRET_KEY") from None  # fmt: skip


def redact(message: str, secrets: dict[str, str]) -> str:
    """`message` with every secret of a source masked: an error may quote a URL or a request."""
    for secret in filter(None, secrets.values()):
        message = message.replace(secret, "***")
    return message
