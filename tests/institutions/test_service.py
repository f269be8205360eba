"""Registering issuers: discovery over real HTTP, pinned JWKS URI, refusals named by field."""

import os
import subprocess

import httpx
import pytest

from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.errors import Conflict, InvalidInput, NotFound, Unavailable
from cellcommons.institutions.service import list_issuers, register_issuer, remove_issuer, trusted_issuers

LEIDEN = INSTITUTIONS[0]


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def leiden(session):
    return await catalogue.save_institution(session, InstitutionIn(**LEIDEN), origin="test")


def _args(idp, **overrides):
    slug = LEIDEN["slug"]
    return (
        dict(
            institution_slug=slug,
            issuer_url=idp.issuer(slug),
            audience="cellcommons",
            algorithms=[idp.algorithm(slug)],
            role_claim="groups",
            role_mapping={"cellcommons-steward": "steward"},
        )
        | overrides
    )


async def test_registering_reads_discovery_and_pins_the_jwks_uri(session, http, dev_idp, leiden):
    issuer = await register_issuer(session, http, **_args(dev_idp))
    assert issuer.jwks_uri == dev_idp.jwks_uri(LEIDEN["slug"])
    assert issuer.institution_id == leiden.id
    trusted = await trusted_issuers(session)
    assert trusted[issuer.issuer_url].institution_slug == LEIDEN["slug"]
    assert [slug for slug, _ in await list_issuers(session)] == [LEIDEN["slug"]]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"algorithms": []}, "algorithms"),
        ({"role_mapping": {"admins": "superuser"}}, "role_mapping"),
        ({"access_token_claim": "token_use"}, "access_token_claim"),
    ],
)
async def test_bad_registrations_name_the_field(session, http, dev_idp, leiden, overrides, field):
    with pytest.raises(InvalidInput) as caught:
        await register_issuer(session, http, **_args(dev_idp, **overrides))
    assert caught.value.field == field


async def test_a_discovery_document_naming_another_issuer_is_refused(session, http, dev_idp, leiden):
    # The trailing slash makes it another issuer string than the one the document declares.
    with pytest.raises(InvalidInput, match="names another issuer"):
        await register_issuer(session, http, **_args(dev_idp, issuer_url=dev_idp.issuer(LEIDEN["slug"]) + "/"))


async def test_unreachable_unknown_and_duplicate_issuers(session, http, dev_idp, leiden):
    with pytest.raises(Unavailable):
        await register_issuer(session, http, **_args(dev_idp, issuer_url="http://127.0.0.1:1/realms/x"))
    with pytest.raises(NotFound):
        await register_issuer(session, http, **_args(dev_idp, institution_slug="no-such-place"))
    await register_issuer(session, http, **_args(dev_idp))
    with pytest.raises(Conflict):
        await register_issuer(session, http, **_args(dev_idp))
    await remove_issuer(session, dev_idp.issuer(LEIDEN["slug"]))
    assert await trusted_issuers(session) == {}
    with pytest.raises(NotFound):
        await remove_issuer(session, dev_idp.issuer(LEIDEN["slug"]))


@pytest.mark.slow
def test_the_cli_adds_lists_and_removes_an_issuer(fresh_settings, dev_idp):
    import asyncio

    from cellcommons.db import Database

    async def add_institution():
        database = Database(fresh_settings)
        async with database.unit_of_work() as session:
            await catalogue.save_institution(session, InstitutionIn(**LEIDEN), origin="test")
        await database.dispose()

    asyncio.run(add_institution())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    env |= {"CELLCOMMONS_ENVIRONMENT": "test", "CELLCOMMONS_DATABASE_URL": fresh_settings.database_url}
    issuer = dev_idp.issuer(LEIDEN["slug"])

    def cli(*args):
        return subprocess.run(
            ["cellcommons", "institutions", *args], env=env, capture_output=True, text=True, timeout=60
        )

    added = cli("add-issuer", LEIDEN["slug"], issuer, "--role-claim", "groups", "--role", "cellcommons-steward=steward",
                "--orcid-claim", "eduPersonOrcid")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert dev_idp.jwks_uri(LEIDEN["slug"]) in added.stdout

    async def registered():
        database = Database(fresh_settings)
        async with database.unit_of_work() as session:
            [(_, entry)] = await list_issuers(session)
        await database.dispose()
        return entry

    entry = asyncio.run(registered())
    assert (entry.role_claim, entry.orcid_claim) == ("groups", "eduPersonOrcid")
    listed = cli("issuers")
    assert issuer in listed.stdout.replace("\n", "") or LEIDEN["slug"] in listed.stdout
    refused = cli("add-issuer", LEIDEN["slug"], issuer, "--role", "oops")
    assert refused.returncode != 0 and "VALUE=ROLE" in refused.stderr
    assert cli("remove-issuer", issuer).returncode == 0
    missing = cli("remove-issuer", issuer)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no issuer")
