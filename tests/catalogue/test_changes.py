"""The change log and the feed read from it, against committed data in a database of the test's own.

The feed can only be judged with real concurrent transactions: several connections write and commit (or roll
back) in an order unlike the order they wrote in, while a reader follows the feed from its last cursor.
"""

import asyncio
import importlib
import random

import pytest
from sqlalchemy import create_engine, select, text, update
from tests.catalogue.factories import valid_batch, valid_collection, valid_dataset, valid_donor, valid_spec

from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue import changes, service
from cellcommons.catalogue.changes import Change, FeedRequest, Operation
from cellcommons.catalogue.models import Dataset, DatasetVersion, Donor
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.errors import Conflict, InvalidInput

PEER = "peer-node"


@pytest.fixture
async def database(fresh_settings):
    database = Database(fresh_settings)
    yield database
    await database.dispose()


@pytest.fixture
async def leiden(database, fresh_settings):
    """Leiden with the specification, donor and collection its batches need, committed."""
    async with database.unit_of_work() as session:
        institution = await service.save_institution(session, InstitutionIn(**INSTITUTIONS[0]), origin="test")
        node = fresh_settings.node_id
        await service.save_specification(session, institution, valid_spec(), origin=node)
        await service.save_donor(session, institution, valid_donor(), origin=node)
        await service.save_collection(session, institution, valid_collection(), origin=node)
    return institution


def member(institution, *roles: Role) -> Principal:
    return Principal(institution.id, institution.slug, "alice", frozenset({Role.reader, *roles}))


class Follower:
    """A reader following the feed as a peer would: from its last cursor, a page at a time, in new sessions."""

    def __init__(self, database: Database, principal: Principal, node_id: str):
        self.database, self.principal, self.node_id = database, principal, node_id
        self.after: changes.Position | None = None
        self.seen: list[Change] = []

    async def follow(self, page_size: int = 3) -> list[Change]:
        new = []
        while True:
            async with self.database.unit_of_work() as session:
                page = await changes.read_feed(
                    session, self.principal, self.node_id, FeedRequest(first=page_size, after=self.after)
                )
            new += page.changes
            if page.changes:
                self.after = changes.position(page.changes[-1])
            if not page.has_next:
                break
        self.seen += new
        return new


async def settled(database: Database) -> None:
    """Wait until the feed's watermark has passed every transaction committed so far. It waits for every older
    transaction of the cluster, other test runs' included, so a test reading right after its commits may not
    see them yet."""
    async with database.unit_of_work() as session:
        now = await session.scalar(text(f"SELECT {changes.CURRENT_XID}"))
    for _ in range(600):
        async with database.unit_of_work() as session:
            if await session.scalar(text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")) > now:
                return
        await asyncio.sleep(0.1)
    pytest.fail("the feed's watermark did not pass this test's commits in 60 s")


async def first_draft(session, leiden, node: str) -> tuple:
    """A dataset of leiden's, over a batch of its own, with one draft version: its id and accession."""
    await service.save_batch(session, leiden, valid_batch(), origin=node)
    draft = await service.save_dataset(session, leiden, valid_dataset(), origin=node)
    return draft.dataset_id, (await session.get_one(Dataset, draft.dataset_id)).accession


def batch_ids(rows: list[Change]) -> list:
    return [(c.record_id, c.operation) for c in rows if c.record_type == "Batch"]


async def test_a_change_that_commits_late_is_not_skipped(database, fresh_settings, leiden):
    node = fresh_settings.node_id
    follower = Follower(database, member(leiden), node)
    await settled(database)
    await follower.follow()
    assert {c.record_type for c in follower.seen} == {"Specification", "Donor", "Collection"}

    # A writes first (lower xid and seq) but is slow; B writes after and commits first.
    async with database.sessions() as slow, database.sessions() as fast:
        await slow.begin()
        late = await service.save_batch(slow, leiden, valid_batch(lot_number="LATE-1"), origin=node)
        await fast.begin()
        early = await service.save_batch(fast, leiden, valid_batch(lot_number="EARLY-1"), origin=node)
        await fast.commit()

        # A reader that trusted the sequence would now move past the slow writer's lower seq for good.
        async with database.unit_of_work() as session:
            naive = (await session.scalars(select(Change.record_id).where(Change.record_type == "Batch"))).all()
        assert naive == [early.id]
        assert await follower.follow() == [], "B's change waits behind the open transaction A"

        await slow.commit()

    await settled(database)
    assert batch_ids(await follower.follow()) == [(late.id, "create"), (early.id, "create")]
    assert await follower.follow() == []


async def test_racing_writers_with_rollbacks_are_followed_completely_and_in_order(database, fresh_settings, leiden):
    """Writers hold their transactions open for random times and some roll back; the follower polls throughout
    and ends with exactly the committed changes, each once, in feed order."""
    node = fresh_settings.node_id
    follower = Follower(database, member(leiden), node)
    await follower.follow()
    committed: set = set()
    rng = random.Random(9)

    async def writer(number: int) -> None:
        for round_ in range(3):
            async with database.sessions() as session:
                await session.begin()
                lot = f"RACE-{number}-{round_}"
                batch = await service.save_batch(session, leiden, valid_batch(lot_number=lot), origin=node)
                await asyncio.sleep(rng.uniform(0, 0.05))
                if rng.random() < 0.25:
                    await session.rollback()
                    continue
                await session.commit()
            committed.add(batch.id)

    writers = asyncio.gather(*(writer(n) for n in range(6)))
    while not writers.done():
        await follower.follow(page_size=2)
        await asyncio.sleep(0.005)
    await writers
    await settled(database)
    await follower.follow()

    followed = [c.record_id for c in follower.seen if c.record_type == "Batch"]
    assert set(followed) == committed and len(followed) == len(committed)
    positions = [changes.position(c) for c in follower.seen]
    assert positions == sorted(positions)


async def test_the_feed_shows_each_caller_only_what_it_may_see(database, fresh_settings, leiden):
    node = fresh_settings.node_id
    async with database.unit_of_work() as session:
        maple = await service.save_institution(session, InstitutionIn(**INSTITUTIONS[2]), origin="test")
        shared = await service.save_batch(session, leiden, valid_batch(lot_number="SHARED-1"), origin=node)
        await service.save_batch(session, leiden, valid_batch(lot_number="HARVESTED-1"), origin=PEER)

    async def feed(principal) -> list[Change]:
        await settled(database)
        async with database.unit_of_work() as session:
            page = await changes.read_feed(session, principal, node, FeedRequest(first=100))
        return page.changes

    mine = await feed(member(leiden))
    assert {c.record_type for c in mine} == {"Specification", "Donor", "Collection", "Batch"}
    assert [c.record_id for c in mine if c.record_type == "Batch"] == [shared.id], "harvested copies: not ours"
    theirs = await feed(member(maple))
    assert {c.record_type for c in theirs} == {"Specification", "Batch"}, "donors and collections stay home"
    assert await feed(None) == []


async def test_deletes_are_tombstones_seen_by_whoever_could_see_the_record(database, fresh_settings, leiden):
    node = fresh_settings.node_id
    async with database.unit_of_work() as session:
        maple = await service.save_institution(session, InstitutionIn(**INSTITUTIONS[2]), origin="test")
        batch = await service.save_batch(session, leiden, valid_batch(lot_number="GONE-1"), origin=node)
    submitter = member(leiden, Role.submitter)
    async with database.unit_of_work() as session:
        editor = await service.editor(session, submitter, node)
        await service.delete_record(session, editor, type(batch), batch.id)

    async def feed(principal) -> list[Change]:
        await settled(database)
        async with database.unit_of_work() as session:
            return (await changes.read_feed(session, principal, node, FeedRequest(first=100))).changes

    # Members keep their records' whole history; others see the tombstone of a batch they could see.
    assert batch_ids(await feed(member(leiden))) == [(batch.id, "create"), (batch.id, "delete")]
    assert batch_ids(await feed(member(maple))) == [(batch.id, Operation.delete.value)]
    async with database.unit_of_work() as session:
        editor = await service.editor(session, submitter, node)
        donor_id = (await session.scalars(select(Change.record_id).where(Change.record_type == "Donor"))).one()
        with pytest.raises(Conflict):  # the donor is still linked to the collection
            await service.delete_record(session, editor, Donor, donor_id)
    assert not [c for c in await feed(member(maple)) if c.record_type == "Donor"]


async def test_others_see_a_datasets_changes_only_when_a_version_they_see_is_published(
    database, fresh_settings, leiden
):
    """Drafts (saved, edited, discarded) and non_public versions are the owner's: a change that touched only
    them must not show in another institution's feed, though the dataset itself is visible to it."""
    node = fresh_settings.node_id
    async with database.unit_of_work() as session:
        maple = await service.save_institution(session, InstitutionIn(**INSTITUTIONS[2]), origin="test")
        dataset_id, accession = await first_draft(session, leiden, node)
        await service.save_dataset(session, leiden, valid_dataset(title="Edited"), origin=node, accession=accession)
        await service.publish(session, leiden, accession)
        second = await service.save_dataset(
            session, leiden, valid_dataset(title="Second"), origin=node, accession=accession
        )
    async with database.unit_of_work() as session:
        editor = await service.editor(session, member(leiden, Role.submitter), node)
        await service.delete_record(session, editor, DatasetVersion, second.id)  # the draft discarded
    async with database.unit_of_work() as session:
        hidden = valid_dataset(title="Third", access_rights="non_public")
        await service.save_dataset(session, leiden, hidden, origin=node, accession=accession)
        await service.publish(session, leiden, accession)
        await service.save_dataset(session, leiden, valid_dataset(title="Fourth"), origin=node, accession=accession)

    async def dataset_changes(principal) -> list[str]:
        async with database.unit_of_work() as session:
            page = await changes.read_feed(session, principal, node, FeedRequest(first=100))
        return [c.operation for c in page.changes if c.record_type == "Dataset" and c.record_id == dataset_id]

    await settled(database)
    assert await dataset_changes(member(leiden)) == ["create"] + ["update"] * 7, "members see every change"
    assert await dataset_changes(member(maple)) == ["update"], "others: only the publish of a version they see"


async def test_the_migration_shares_the_publishes_logged_before_dataset_changes_were_kept_from_others(
    database, fresh_settings, leiden
):
    """Revision 0017 on a log written before `shared` counted for datasets: each publish of a version others may
    see is shared again, and nothing else (draft saves, a non_public publish)."""
    node = fresh_settings.node_id
    async with database.unit_of_work() as session:
        maple = await service.save_institution(session, InstitutionIn(**INSTITUTIONS[2]), origin="test")
        dataset_id, accession = await first_draft(session, leiden, node)
        await service.publish(session, leiden, accession)
    for content in (valid_dataset(title="Second", access_rights="non_public"), valid_dataset(title="Third")):
        async with database.unit_of_work() as session:
            await service.save_dataset(session, leiden, content, origin=node, accession=accession)
            await service.publish(session, leiden, accession)
    async with database.unit_of_work() as session:
        await service.save_dataset(session, leiden, valid_dataset(title="Draft"), origin=node, accession=accession)

    def shared():
        return select(Change.shared).where(Change.record_id == dataset_id).order_by(Change.seq)

    async with database.unit_of_work() as session:
        written = list(await session.scalars(shared()))
    migration = importlib.import_module("cellcommons.migrations.versions.0017_dataset_changes_shared")
    owner = create_engine(fresh_settings.owner_url)  # the log is the owner's to amend; the application only appends
    try:
        with owner.begin() as connection:
            connection.execute(update(Change).where(Change.record_type == "Dataset").values(shared=False))
            connection.execute(text(migration.SHARE_PUBLISHES))
    finally:
        owner.dispose()
    async with database.unit_of_work() as session:
        assert list(await session.scalars(shared())) == written == [False, True, False, False, False, True, False]
    await settled(database)
    async with database.unit_of_work() as session:
        page = await changes.read_feed(session, member(maple), node, FeedRequest(first=100))
    assert [c.operation for c in page.changes if c.record_id == dataset_id] == ["update", "update"]


def test_cursors_round_trip_and_bad_ones_name_the_argument():
    position = changes.Position(xid=123456789012, seq=42)
    assert changes.parse_cursor(changes.cursor(position), "after") == position
    for bad in ("", "not-a-cursor", changes.cursor(changes.Position(1, 2))[:-2] + "!!"):
        with pytest.raises(InvalidInput) as raised:
            changes.parse_cursor(bad, "after")
        assert raised.value.field == "after"


def test_a_cursor_past_the_bigint_range_is_a_bad_cursor_not_a_database_error():
    assert changes.parse_cursor(changes.cursor(changes.Position(2**63 - 1, 2**63 - 1)), "before")
    for position in (changes.Position(2**63, 1), changes.Position(1, 2**63)):
        with pytest.raises(InvalidInput) as raised:
            changes.parse_cursor(changes.cursor(position), "before")
        assert raised.value.field == "before"
