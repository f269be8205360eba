"""Issuers for auth tests: one dev identity provider per session, serving the four demo institutions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cellcommons.auth.dev_idp import DevIdentityProvider
from cellcommons.settings import Environment, Settings


@pytest.fixture(scope="session")
def dev_idp() -> Iterator[DevIdentityProvider]:
    """One loopback server, issuers at `dev_idp.issuer(slug)` for every slug of demo.consortium.INSTITUTIONS."""
    with DevIdentityProvider(None, Settings(environment=Environment.test)) as idp:
        yield idp


@pytest.fixture
def clean_dev_idp(dev_idp: DevIdentityProvider) -> Iterator[DevIdentityProvider]:
    """The session's provider, reset before and after: for tests that rotate keys, take JWKS down or count."""
    dev_idp.reset()
    yield dev_idp
    dev_idp.reset()
