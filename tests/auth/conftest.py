"""The demo institutions with their dev issuers registered, and a validator that trusts them."""

from __future__ import annotations

import httpx
import pytest

from cellcommons.auth.validator import TokenValidator
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.demo.identity import register_dev_issuers


async def register_demo_issuers(session, http, idp) -> dict:
    for institution in INSTITUTIONS:
        await catalogue.save_institution(session, InstitutionIn(**institution), origin="test")
    return await register_dev_issuers(session, http, idp)


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
