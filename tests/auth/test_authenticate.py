"""Authorization header → Principal through the database registry; sign-ins and rejections audited."""

import httpx
import pytest
from sqlalchemy import select
from tests.auth.conftest import register_demo_issuers

from cellcommons.audit.models import AuditEvent
from cellcommons.auth.authenticate import Authenticator
from cellcommons.auth.issuers import IssuerRegistry
from cellcommons.auth.validator import TokenRejected, TokenValidator
from cellcommons.db import Database

LEIDEN = "leiden-scgt"


@pytest.fixture
async def authenticator(fresh_settings, dev_idp):
    database = Database(fresh_settings)
    async with httpx.AsyncClient(timeout=5) as http:
        async with database.unit_of_work() as session:
            await register_demo_issuers(session, http, dev_idp)
        yield Authenticator(database, TokenValidator(IssuerRegistry(database).lookup, http)), database
    await database.dispose()


async def _events(database):
    async with database.unit_of_work() as session:
        return (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()


async def test_no_header_is_anonymous_and_a_good_token_signs_in_once(authenticator, dev_idp):
    auth, database = authenticator
    assert await auth.principal(None) is None
    token = dev_idp.issue_access_token(LEIDEN, "stella")
    principal = await auth.principal(f"Bearer {token}")
    assert principal.institution_slug == LEIDEN
    await auth.principal(f"Bearer {token}")
    sign_ins = [e for e in await _events(database) if e.action == "auth.sign_in"]
    assert len(sign_ins) == 1
    assert sign_ins[0].actor == principal.actor and sign_ins[0].institution == LEIDEN


async def test_rejected_tokens_are_audited_without_the_token(authenticator, dev_idp):
    auth, database = authenticator
    token = dev_idp.issue_access_token(LEIDEN, "alice", aud="someone-else")
    with pytest.raises(TokenRejected):
        await auth.principal(f"Bearer {token}")
    with pytest.raises(TokenRejected, match="expected a bearer token"):
        await auth.principal(f"Basic {token}")
    rejected = [e for e in await _events(database) if e.action == "auth.token_rejected"]
    assert [e.details["reason"] for e in rejected] == ["wrong audience", "expected a bearer token"]
    assert rejected[0].details["claimed_issuer"] == dev_idp.issuer(LEIDEN)
    assert all(token not in str(e.details) and e.outcome == "denied" for e in rejected)
