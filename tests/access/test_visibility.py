"""The query form against the real PostgreSQL: on the tiny consortium, every SELECT filter returns exactly the
rows `policy.can` allows, for principals of two institutions (application role, rolled back after each test)."""

import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from cellcommons.access.policy import Action, can
from cellcommons.access.visibility import (
    VISIBLE,
    describe,
    downloadable_dataset_versions,
    get_visible,
    per_viewer,
    visible_batches,
    visible_dataset_versions,
    visible_qc_results,
)
from cellcommons.audit import service as audit
from cellcommons.audit.models import AuditEvent
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import service
from cellcommons.catalogue.enums import AccessRights, VersionStatus
from cellcommons.catalogue.models import (
    Batch,
    Collection,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Distribution,
    Donor,
    DonorTest,
    Institution,
    QcResult,
    SpecCriterion,
    Specification,
)
from cellcommons.catalogue.schemas import BatchIn
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import dataset_input, seed_through_service
from cellcommons.errors import NotFound

SEED = 5  # gives public, restricted and non_public datasets; lowlands-regmed has a non_public one
PEER = "peer-node"
DESCRIBED = [Institution, Specification, DatasetVersion, Batch, QcResult, Donor, Collection, AuditEvent]
# Parts are seen with the record they belong to: (part, [(parent, foreign key), …]).
PARTS = [
    (SpecCriterion, [(Specification, "specification_id")]),
    (Distribution, [(DatasetVersion, "dataset_version_id")]),
    (DataUseCondition, [(DatasetVersion, "dataset_version_id"), (Donor, "donor_id")]),
    (DonorTest, [(Donor, "donor_id")]),
]


@dataclass
class World:
    node_id: str
    principals: dict[str, Principal | None]
    hidden_batch: Batch  # A's, linked only to a published non_public version
    harvested_batch: Batch  # B's, harvested from a peer node
    local_batch: Batch  # B's own


def _person(institution: Institution, subject: str, *roles: Role) -> Principal:
    return Principal(institution.id, institution.slug, subject, frozenset({Role.reader, *roles}))


@pytest.fixture
async def world(session, settings) -> World:
    node = settings.node_id
    await seed_through_service(session, Consortium(SCALES["tiny"], seed=SEED), origin=node)
    records = {r.institution["slug"]: r for r in Consortium(SCALES["tiny"], seed=SEED).records()}
    a, b = [
        await session.scalar(select(Institution).where(Institution.slug == s))
        for s in ("leiden-scgt", "lowlands-regmed")
    ]

    # A batch of A linked only to a published non_public version.
    _, content = dataset_input(records[a.slug].datasets[0])
    lot = next(x for x in records[a.slug].batches if x["tissue"] == content.tissue)
    hidden_batch = await service.save_batch(session, a, BatchIn(**{**lot, "lot_number": "HIDDEN-1"}), origin=node)
    secret = content.model_copy(update={"access_rights": AccessRights.non_public, "batches": ["HIDDEN-1"]})
    await service.save_dataset(session, a, secret, origin=node, accession="CCD-SECRET-1")
    await service.publish(session, a, "CCD-SECRET-1")
    # A draft second version of a published restricted dataset of A: drafts stay with their institution.
    restricted = next(d for d in records[a.slug].datasets if d["access_rights"] == "restricted")
    accession, content = dataset_input(restricted)
    await service.save_dataset(session, a, content.model_copy(update={"title": "v2"}), origin=node, accession=accession)
    # A harvested copy of a batch at B, and B's own.
    local = records[b.slug].batches[0]
    harvested_batch = await service.save_batch(session, b, BatchIn(**{**local, "lot_number": "PEER-1"}), origin=PEER)
    local_batch = await service.save_batch(session, b, BatchIn(**local), origin=node)

    principals = {
        "anonymous": None,
        "A reader": _person(a, "a-reader"),
        "A submitter": _person(a, "a-submitter", Role.submitter),
        "A steward": _person(a, "a-steward", Role.steward),
        "B reader": _person(b, "b-reader"),
        "B submitter": _person(b, "b-submitter", Role.submitter),
        "B steward": _person(b, "b-steward", Role.steward),
    }
    for who, institution in [("A reader", a), ("A submitter", a), ("B steward", b), ("B reader", b)]:
        await audit.append(session, actor=principals[who].actor, action="batch.view", institution=institution.slug)
    await audit.append(session, actor="client:a-sync", action="sync.run", institution=a.slug)
    # B's own "a-reader" (subjects are unique per issuer only): not A's reader, whose actor name it shares
    await audit.append(session, actor=principals["A reader"].actor, action="batch.view", institution=b.slug)
    return World(node, principals, hidden_batch, harvested_batch, local_batch)


WHO = ["anonymous", "A reader", "A submitter", "A steward", "B reader", "B submitter", "B steward"]


async def _visible_ids(session, principal, model) -> set:
    return set(await session.scalars(select(model.id).where(VISIBLE[model](principal))))


@pytest.mark.parametrize("who", WHO)
async def test_the_query_form_returns_exactly_what_can_allows(session, world, who):
    principal = world.principals[who]
    visible: dict[type, set] = {}
    for model in DESCRIBED:
        rows = list(await session.scalars(select(model)))
        allowed = {r.id for r in rows if can(principal, Action.view, await describe(session, r, node_id=world.node_id))}
        visible[model] = await _visible_ids(session, principal, model)
        assert visible[model] == allowed, model.__name__
    for part, parents in PARTS:
        rows = list(await session.scalars(select(part)))
        expected = {r.id for r in rows if any(getattr(r, fk) in visible[parent] for parent, fk in parents)}
        assert await _visible_ids(session, principal, part) == expected, part.__name__
    # A dataset (its accession) is seen when one of its versions is.
    versions = select(DatasetVersion.dataset_id).where(DatasetVersion.id.in_(visible[DatasetVersion]))
    assert await _visible_ids(session, principal, Dataset) == set(await session.scalars(versions))


async def test_what_each_institution_sees(session, world):
    p = world.principals
    batches = {who: await _visible_ids(session, p[who], Batch) for who in ("A reader", "B reader", "anonymous")}
    assert world.hidden_batch.id in batches["A reader"] and world.hidden_batch.id not in batches["B reader"]
    assert world.harvested_batch.id in batches["A reader"]  # a harvested copy is seen like any other
    assert batches["anonymous"] == set()
    donors = {who: await _visible_ids(session, p[who], Donor) for who in ("A reader", "B reader")}
    assert donors["A reader"] and donors["B reader"] and not donors["A reader"] & donors["B reader"]

    versions = list(await session.scalars(select(DatasetVersion)))
    seen_by_b = await _visible_ids(session, p["B reader"], DatasetVersion)
    for v in versions:
        custodian = await session.get(Dataset, v.dataset_id)
        shared = v.status is VersionStatus.published and v.access_rights is not AccessRights.non_public
        assert (v.id in seen_by_b) is (shared or custodian.institution_id == p["B reader"].institution_id)
    assert {v.access_rights for v in versions} == set(AccessRights)

    # A reader: its own (not B's namesake's); A steward: A's three (two people and a machine client); B steward:
    # B's three (its own, B reader's and B's namesake of A reader's).
    events = {
        who: len(await _visible_ids(session, p[who], AuditEvent)) for who in ["A reader", "A steward", "B steward"]
    }
    assert events == {"A reader": 1, "A steward": 3, "B steward": 3}


async def test_statements_built_once_per_shape_of_principal_see_what_each_caller_sees(session, world):
    """One statement serves every principal with the same roles (A's and B's readers share one), the caller's
    institution bound at execution; it returns exactly what the rule built for that caller returns."""
    shared = per_viewer(lambda principal, model: select(model.id).where(VISIBLE[model](principal, model)))
    models = [Dataset, DatasetVersion, Distribution, DataUseCondition, Batch, QcResult, Donor, Collection]
    for who in WHO:
        for model in models:
            expected = await _visible_ids(session, world.principals[who], model)
            assert set(await session.scalars(shared(world.principals[who], model))) == expected, (who, model)


@pytest.mark.parametrize("who", WHO)
async def test_versions_joined_with_their_dataset_read_the_custodian_from_the_join(session, world, who):
    principal = world.principals[who]
    joined = (
        select(DatasetVersion.id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(visible_dataset_versions(principal, DatasetVersion, Dataset))
    )
    assert set(await session.scalars(joined)) == await _visible_ids(session, principal, DatasetVersion)


async def test_harvested_copies_are_read_only(session, world):
    submitter = world.principals["B submitter"]
    harvested = await describe(session, world.harvested_batch, node_id=world.node_id)
    local = await describe(session, world.local_batch, node_id=world.node_id)
    assert can(submitter, Action.view, harvested) and not can(submitter, Action.update, harvested)
    assert can(submitter, Action.update, local)


@pytest.mark.parametrize("who", ["A reader", "A steward", "B reader", "B steward"])
async def test_downloads_in_sql_agree_with_can(session, world, who):
    principal = world.principals[who]
    versions = list(await session.scalars(select(DatasetVersion)))
    # Pretend the principal holds an active DUA for every other published restricted version.
    covered = {v.id for v in versions if v.access_rights is AccessRights.restricted and v.published_at}
    covered = set(sorted(covered)[::2])
    allowed = set()
    for v in versions:
        if can(principal, Action.download, await describe(session, v, node_id=world.node_id, covered=covered)):
            allowed.add(v.id)
    query = select(DatasetVersion.id).where(downloadable_dataset_versions(principal, covered))
    assert set(await session.scalars(query)) == allowed
    assert allowed  # stewards: their own; readers: what the DUAs cover


async def test_get_visible_answers_hidden_exactly_like_missing(session, world):
    outsider, insider = world.principals["B reader"], world.principals["A reader"]
    hidden_id, missing_id = world.hidden_batch.id, uuid.uuid4()
    assert (await get_visible(session, insider, Batch, hidden_id)).id == hidden_id
    with pytest.raises(NotFound) as hidden:
        await get_visible(session, outsider, Batch, hidden_id)
    with pytest.raises(NotFound) as missing:
        await get_visible(session, outsider, Batch, missing_id)
    as_hidden = hidden.value.as_dict() | {"message": hidden.value.message.replace(str(hidden_id), "?")}
    as_missing = missing.value.as_dict() | {"message": missing.value.message.replace(str(missing_id), "?")}
    assert as_hidden == as_missing == {"code": "not_found", "message": "no batch ?", "field": "id"}

    donor = await session.scalar(select(Donor).where(Donor.institution_id == insider.institution_id).limit(1))
    with pytest.raises(NotFound, match=f"^no donor {donor.id}$"):
        await get_visible(session, outsider, Donor, donor.id)


async def test_the_expressions_compose_inside_joined_queries(session, world):
    """EXISTS over fresh aliases: the same meaning when the query already joins the same tables."""
    outsider = world.principals["B reader"]
    joined = (
        select(QcResult.id)
        .join(Batch, Batch.id == QcResult.batch_id)
        .where(visible_qc_results(outsider), visible_batches(outsider))
    )
    alone = select(QcResult.id).where(visible_qc_results(outsider))
    assert set(await session.scalars(joined)) == set(await session.scalars(alone))
    of_hidden_batch = select(QcResult.id).where(QcResult.batch_id == world.hidden_batch.id)
    assert set(await session.scalars(of_hidden_batch)).isdisjoint(await session.scalars(alone))
