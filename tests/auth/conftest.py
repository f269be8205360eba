"""The demo institutions with their dev issuers registered, and a validator that trusts them."""

from __future__ import annotations

import httpx
import pytest

from cellcommons.auth.validator import TokenValidator
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.institutions.service import register_issuer, trusted_issuers


async def register_demo_issuers(session, http, idp) -> dict:
    for institution in INSTITUTIONS:
        await catalogue.save_institution(session, InstitutionIn(**institution), origin="test")
        slug = institution["slug"]
        mapping = idp.role_mapping(slug)
        await register_issuer(
            session,
            http,
            institution_slug=slug,
            issuer_url=idp.issuer(slug),
            audience="cellcommons",
            algorithms=[idp.algorithm(slug)],
            role_claim=mapping.claim_path,
            role_mapping={value: role.value for value, role in mapping.values.items()},
        )
    return await trusted_issuers(session)


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def trusted(session, http, dev_idp):
    return await register_demo_issuers(session, http, dev_idp)


@pytest.fixture
def validator(trusted, http):
    async def lookup(issuer_url):
        return trusted.get(issuer_url)

    return TokenValidator(lookup, http, leeway=30, refetch_interval=60)
