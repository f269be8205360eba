"""Token validation with a cached key against a bare signature verification of the same token, same run."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from joserfc import jwk, jwt
from rich.console import Console

from bench.report import Measure, Report, rate
from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.auth.validator import TokenValidator
from cellcommons.demo.scratch import ScratchStack
from cellcommons.institutions.service import TrustedIssuer
from cellcommons.settings import Environment, Settings


def _trusted(idp: DevIdentityProvider, slug: str) -> TrustedIssuer:
    mapping = idp.role_mapping(slug)
    return TrustedIssuer(
        issuer_url=idp.issuer(slug),
        jwks_uri=idp.jwks_uri(slug),
        audience="cellcommons",
        algorithms=(idp.algorithm(slug),),
        institution_id=uuid.uuid4(),
        institution_slug=slug,
        access_token_claim=None,
        access_token_value=None,
        role_claim=mapping.claim_path,
        role_mapping={value: role.value for value, role in mapping.values.items()},
    )


async def _measure(idp: DevIdentityProvider, slug: str, count: int) -> tuple[float, float]:
    issuer = _trusted(idp, slug)

    async def lookup(url: str) -> TrustedIssuer | None:
        return issuer if url == issuer.issuer_url else None

    token = idp.issue_access_token(slug, "stella", lifetime=3600)
    public_key = jwk.import_key(idp.public_jwk(slug))
    async with httpx.AsyncClient() as http:
        validator = TokenValidator(lookup, http)
        await validator.validate(token)  # warm the key cache: only cached-key validation is measured

        ours = 0.0
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(count):
                await validator.validate(token)
            ours = max(ours, count / (time.perf_counter() - start))

    def bare_many() -> int:
        for _ in range(count):
            jwt.decode(token, public_key, algorithms=[issuer.algorithms[0]])
        return count

    return ours, rate(bare_many)


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    count = 300 if quick else 3000
    report = Report("auth", notes=[f"{count} validations of one token per round, best of 3; key cached"])
    with DevIdentityProvider(None, Settings(_env_file=None, environment=Environment.test)) as idp:
        for slug in ("leiden-scgt", "stroma-bio"):
            loop = asyncio.new_event_loop()
            try:
                ours, bare = loop.run_until_complete(_measure(idp, slug, count))
            finally:
                loop.close()
            report.measures.append(
                Measure(f"validate ({idp.algorithm(slug)})", ours, bare, "tokens/s", "joserfc jwt.decode", 0.7)
            )
    return report
