"""A small consortium for access tests, written through the catalogue service in the rolled-back session.

Four institutions: Leiden (NL, non-profit) and Lowlands (BE, public) hold restricted datasets; Maple (CA,
non-profit, no transfer basis recorded) and Stroma (NL, commercial) only request.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tests.catalogue.factories import valid_dataset
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the in-process API, for test_graphql)

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import service
from cellcommons.catalogue.models import Dataset, DatasetVersion, Institution
from cellcommons.catalogue.schemas import DataUseConditionIn, InstitutionIn

INSTITUTIONS = {
    "leiden": dict(slug="leiden-scgt", name="Leiden SCGT", country="NL", sector="non_profit", transfer_basis="eea"),
    "lowlands": dict(slug="lowlands-regmed", name="Lowlands", country="BE", sector="public", transfer_basis="eea"),
    "maple": dict(slug="maple-ccrm", name="Maple CCRM", country="CA", sector="non_profit", transfer_basis="none"),
    "stroma": dict(slug="stroma-bio", name="Stroma Bio", country="NL", sector="commercial", transfer_basis="eea"),
}
HMB = DataUseConditionIn(term="DUO:0000006")


def person(institution: Institution, subject: str, *roles: Role) -> Principal:
    return Principal(institution.id, institution.slug, subject, frozenset({Role.reader, *roles}))


@dataclass
class Consortium:
    institutions: dict[str, Institution]
    datasets: dict[str, Dataset]  # "leiden", "lowlands": one published restricted HMB dataset each
    versions: dict[str, DatasetVersion]
    node_id: str

    def member(self, key: str, subject: str, *roles: Role) -> Principal:
        return person(self.institutions[key], subject, *roles)


async def publish_dataset(session, institution: Institution, node_id: str, **overrides) -> DatasetVersion:
    content = valid_dataset(**{"batches": [], "conditions": [HMB], **overrides})
    version = await service.save_dataset(session, institution, content, origin=node_id)
    dataset = await session.get_one(Dataset, version.dataset_id)
    return await service.publish(session, institution, dataset.accession)


async def build_consortium(session, node: str) -> Consortium:
    """The consortium written in `session`: the fixture's rolled-back one, or a committed one of a test's own."""
    institutions = {
        key: await service.save_institution(session, InstitutionIn(**data), origin=node)
        for key, data in INSTITUTIONS.items()
    }
    versions = {key: await publish_dataset(session, institutions[key], node) for key in ("leiden", "lowlands")}
    datasets = {key: await session.get_one(Dataset, v.dataset_id) for key, v in versions.items()}
    return Consortium(institutions, datasets, versions, node)


@pytest.fixture
async def consortium(session, settings) -> Consortium:
    return await build_consortium(session, settings.node_id)
