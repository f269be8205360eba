"""Opaque identifiers: global ids and cursors that do not reveal database keys.

A global id is the type name plus the row's UUID encrypted with AES (one block, a keyed permutation, so the
same row always has the same id and nothing about the key leaks); a cursor (the ordering, the row's sort-key values and
its id) is AES-GCM sealed, so a client can neither read nor forge one. Both are keyed by the settings' secret key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cellcommons.catalogue.reading import Cursor
from cellcommons.errors import InvalidInput, NotFound


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Identifiers:
    def __init__(self, secret: str):
        material = hashlib.sha256(("cellcommons-ids:" + secret).encode()).digest()
        # ECB keeps no state between blocks, so one context serves every id (a new one per id cost more than
        # the encryption); finalize is never called on them.
        block = Cipher(algorithms.AES(material[:16]), modes.ECB())
        self._encrypt, self._decrypt = block.encryptor().update, block.decryptor().update
        self._sealer = AESGCM(hashlib.sha256(("cellcommons-cursors:" + secret).encode()).digest())

    def global_id(self, type_name: str, key: uuid.UUID) -> str:
        return f"{type_name}_{_b64(self._encrypt(key.bytes))}"

    def parse_global_id(self, value: str, field: str = "id") -> tuple[str, uuid.UUID]:
        type_name, _, sealed = value.partition("_")
        try:
            block = _unb64(sealed)
            if not type_name or len(block) != 16:
                raise ValueError
        except (ValueError, binascii.Error):
            raise InvalidInput(f"{value!r} is not a Cell Commons id", field=field) from None
        return type_name, uuid.UUID(bytes=self._decrypt(block))

    def key_of(self, value: str, type_name: str, field: str = "id") -> uuid.UUID:
        """The record a global id names, which must be of `type_name`: an id of another type is as unknown as
        a missing record (NotFound), so ids cannot be used to probe what exists."""
        named, key = self.parse_global_id(value, field)
        if named != type_name:
            raise NotFound(f"no {type_name} with this id", field=field)
        return key

    def cursor(self, cursor: Cursor) -> str:
        nonce = os.urandom(12)
        payload = json.dumps([cursor.ordering, [_dump(v) for v in cursor.values], str(cursor.id)]).encode()
        return _b64(nonce + self._sealer.encrypt(nonce, payload, b"cursor"))

    def parse_cursor(self, value: str, field: str) -> Cursor:
        try:
            raw = _unb64(value)
            ordering, values, key = json.loads(self._sealer.decrypt(raw[:12], raw[12:], b"cursor"))
            return Cursor(str(ordering), tuple(_load(v) for v in values), uuid.UUID(key))
        except (ValueError, InvalidTag, binascii.Error, TypeError, KeyError):
            raise InvalidInput("not a cursor this API issued", field=field) from None


# Sort-key values keep their type through the cursor (JSON alone would turn dates and decimals into strings,
# and a float written as text might not compare equal to the value the database sorted by).
_CODECS: list[tuple[type, str, Callable[[Any], Any], Callable[[Any], Any]]] = [
    (bool, "b", bool, bool),
    (int, "i", int, int),
    (float, "f", float.hex, float.fromhex),
    (Decimal, "n", str, Decimal),
    (datetime, "t", datetime.isoformat, datetime.fromisoformat),
    (date, "d", date.isoformat, date.fromisoformat),
    (str, "s", str, str),
]
_LOADERS = {tag: load for _, tag, _, load in _CODECS}


def _dump(value: Any) -> list | None:
    if value is None:
        return None
    for kind, tag, dump, _ in _CODECS:
        if isinstance(value, kind):
            return [tag, dump(value)]
    raise TypeError(f"cannot put a {type(value).__name__} into a cursor")


def _load(item: list | None) -> Any:
    if item is None:
        return None
    tag, text = item
    return _LOADERS[tag](text)
