"""Opaque identifiers: global ids and cursors that do not reveal database keys.

A global id is the type name plus the row's UUID encrypted with AES (one block, a keyed permutation, so the
same row always has the same id and nothing about the key leaks); a cursor is AES-GCM sealed, so a client can
neither read nor forge one. Both are keyed by the settings' secret key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import uuid
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cellcommons.errors import InvalidInput


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Identifiers:
    def __init__(self, secret: str):
        material = hashlib.sha256(("cellcommons-ids:" + secret).encode()).digest()
        self._block = Cipher(algorithms.AES(material[:16]), modes.ECB())
        self._sealer = AESGCM(hashlib.sha256(("cellcommons-cursors:" + secret).encode()).digest())

    def global_id(self, type_name: str, key: uuid.UUID) -> str:
        encryptor = self._block.encryptor()
        return f"{type_name}_{_b64(encryptor.update(key.bytes) + encryptor.finalize())}"

    def parse_global_id(self, value: str, field: str = "id") -> tuple[str, uuid.UUID]:
        type_name, _, sealed = value.partition("_")
        try:
            block = _unb64(sealed)
            if not type_name or len(block) != 16:
                raise ValueError
        except (ValueError, binascii.Error):
            raise InvalidInput(f"{value!r} is not a Cell Commons id", field=field) from None
        decryptor = self._block.decryptor()
        return type_name, uuid.UUID(bytes=decryptor.update(block) + decryptor.finalize())

    def cursor(self, created_at: datetime, key: uuid.UUID) -> str:
        nonce = os.urandom(12)
        payload = json.dumps([created_at.isoformat(), str(key)]).encode()
        return _b64(nonce + self._sealer.encrypt(nonce, payload, b"cursor"))

    def parse_cursor(self, value: str, field: str) -> tuple[datetime, uuid.UUID]:
        try:
            raw = _unb64(value)
            created_at, key = json.loads(self._sealer.decrypt(raw[:12], raw[12:], b"cursor"))
            return datetime.fromisoformat(created_at), uuid.UUID(key)
        except (ValueError, InvalidTag, binascii.Error, TypeError):
            raise InvalidInput("not a cursor this API issued", field=field) from None
