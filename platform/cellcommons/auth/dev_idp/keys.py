"""Signing keys of the dev issuers, and a signer that writes exactly the header it is given."""

from __future__ import annotations

import json
from typing import Any

from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64encode

SigningKey = RSAKey | ECKey | OctKey


def new_signing_key(algorithm: str) -> RSAKey | ECKey:
    """A fresh key for `algorithm` (RS256: RSA 2048, ES256: EC P-256), its `kid` the RFC 7638 thumbprint."""
    parameters = {"use": "sig", "alg": algorithm}
    if algorithm == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters, auto_kid=True)
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, auto_kid=True)
    raise ValueError(f"the dev issuers sign with RS256 or ES256, not {algorithm!r}")


def sign_compact(header: dict[str, Any], claims: dict[str, Any], key: SigningKey | None) -> str:
    """A JWS compact serialization of exactly `header` and `claims`.

    joserfc (rightly) refuses to produce some tokens that a validator must refuse to accept: unknown `crit`
    parameters, for instance. Tests need those tokens, so the signing input is built here and only the signature
    comes from joserfc's algorithm. The algorithm is the header's `alg`, or the key's when the header has none.
    """
    algorithm = header.get("alg") or (key.alg if key is not None else None)
    if algorithm not in JWSRegistry.algorithms:
        raise ValueError(f"unknown JWS algorithm {algorithm!r}")
    signing_input = b".".join(
        urlsafe_b64encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = JWSRegistry.algorithms[algorithm].sign(signing_input, key)
    return (signing_input + b"." + urlsafe_b64encode(signature)).decode("ascii")
