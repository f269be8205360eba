"""ORCID iDs: the check character, the two forms issuers send, and the ORCID claim an issuer may vouch for."""

import dataclasses

import pytest
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process app on its own database)

from cellcommons.auth.dev_idp.users import orcid
from cellcommons.auth.orcid import canonical_orcid
from cellcommons.auth.validator import TokenValidator

LEIDEN, LOWLANDS = "leiden-scgt", "lowlands-regmed"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0000-0002-1825-0097", "0000-0002-1825-0097"),  # ORCID's own example
        ("https://orcid.org/0000-0002-1825-0097", "0000-0002-1825-0097"),
        (" 0000-0002-1694-233X ", "0000-0002-1694-233X"),  # the check character may be X
        ("HTTPS://ORCID.ORG/0000-0002-1694-233x", "0000-0002-1694-233X"),
        ("0000-0002-1825-0098", None),  # one digit off
        ("0000-0002-1825-009", None),
        ("0000000218250097", None),
        ("https://example.org/0000-0002-1825-0097", None),
        (["0000-0002-1825-0097"], None),
        (None, None),
    ],
)
def test_an_orcid_is_kept_bare_only_when_its_check_character_holds(value, expected):
    assert canonical_orcid(value) == expected


async def test_a_registered_orcid_claim_gives_the_principal_its_orcid(dev_idp, validator):
    principal = await validator.validate(dev_idp.issue_access_token(LEIDEN, "alice"))
    assert principal.orcid == orcid(LEIDEN, "alice") is not None
    assert (await validator.validate(dev_idp.issue_access_token(LEIDEN, "gus"))).orcid is None  # no ORCID


@pytest.mark.parametrize("claimed", ["0009-9965-2025-6670", "not an orcid", 1234, {"id": "0000-0002-1825-0097"}])
async def test_a_malformed_orcid_claim_is_no_orcid_not_a_refused_token(dev_idp, validator, claimed):
    principal = await validator.validate(dev_idp.issue_access_token(LEIDEN, "alice", orcid=claimed))
    assert principal.orcid is None and principal.subject


async def test_an_issuer_without_an_orcid_claim_vouches_for_none(dev_idp, trusted, http):
    issuer = dev_idp.issuer(LOWLANDS)
    unvouched = {issuer: dataclasses.replace(trusted[issuer], orcid_claim=None)}

    async def lookup(url):
        return unvouched.get(url)

    validator = TokenValidator(lookup, http)
    principal = await validator.validate(dev_idp.issue_access_token(LOWLANDS, "alice"))
    assert principal.institution_slug == LOWLANDS and principal.orcid is None


async def test_whoami_shows_the_orcid_the_sign_in_vouched_for(api):  # noqa: F811
    me = (await api.client.get("/whoami", headers=api.token(LEIDEN, "alice"))).json()
    assert me["signed_in"] and me["orcid"] == orcid(LEIDEN, "alice") is not None
    assert (await api.client.get("/whoami", headers=api.token(LEIDEN, "gus"))).json()["orcid"] is None
