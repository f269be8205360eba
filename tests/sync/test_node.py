"""The `node` connector between two Cell Commons nodes on loopback. Each node has its own database (cloned from
the migrated template), its own token issuer and its own uvicorn server (`Served`, as the token-endpoint tests
serve the app). Node B harvests node A's change feed with a machine client that A registered for B's
institution; A's records arrive at B as read-only copies naming A as their origin."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select, text
from tests.api.test_oauth import Served
from tests.sync.conftest import BM_MSC, BONE_MARROW, batch_record

from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.changes import Change
from cellcommons.catalogue.models import (
    Batch,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Donor,
    Institution,
    QcResult,
    Specification,
    dataset_version_batch,
)
from cellcommons.catalogue.schemas import BatchIn, DatasetIn, DonorIn, InstitutionIn, SpecificationIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.graphql.ids import Identifiers
from cellcommons.institutions import clients
from cellcommons.sync import service as sync_service
from cellcommons.sync.harvest import local_id
from cellcommons.sync.models import RunStatus, SyncBookmark
from cellcommons.sync.resilience import RetryPolicy
from cellcommons.sync.runtime import SyncRuntime
from cellcommons.sync.sdk import SourceError
from cellcommons_connectors.node import Changes

LEIDEN, MAPLE = INSTITUTIONS[0], INSTITUTIONS[2]
PEER, HOME = "node-a", "node-b"
SPEC = SpecificationIn(
    version="SPEC-1",
    product_name="BM-MSC",
    criteria=[{"test_type": "viability", "timepoint": "post_thaw", "operator": "≥", "limit": 70, "unit": "%"}],
)
DATASET = DatasetIn(
    title="BM-MSC secretome of lot A-1", description="Proteomics of conditioned medium.", data_types=["proteomics"],
    cell_type=BM_MSC, tissue=BONE_MARROW, batches=["A-1"], personal_data_level="pseudonymised",
    access_rights="restricted", conditions=[{"term": "DUO:0000042"}],
    distributions=[{"file_name": "secretome.csv", "media_type": "text/csv", "size_bytes": 1234,
                    "sha256": "a" * 64, "columns": [{"name": "protein", "type": "string", "sensitivity": "plain"}]}],
)  # fmt: skip
DELETE = "mutation($id: ID!) { result: deleteRecord(id: $id) { __typename ... on Forbidden { message } } }"
SAVE = "mutation($input: BatchInput!) { result: saveBatch(input: $input) { __typename ... on Forbidden { message } } }"
FEED_SIZE = "{ changes(first: 0) { totalCount } }"
FAST_RETRY = RetryPolicy(attempts=8, base=0.2, cap=1.0)
OLDEST_WRITER = (
    "SELECT datname, state, now() - xact_start AS open_for, left(query, 80) FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1"
)


def lot(name: str, viability: float = 91.5) -> BatchIn:
    qc = {"test_type": "viability", "timepoint": "post_thaw", "value": viability, "unit": "%", "passed": True}
    return BatchIn(**batch_record(name, specification_version="SPEC-1", qc_results=[qc]))


@dataclass
class Node:
    served: Served
    database: Database

    @property
    def settings(self):
        return self.served.settings

    async def token(self, client: clients.NewClient) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(self.served.token_endpoint, data={"grant_type": "client_credentials"},
                                       auth=(client.client.client_id, client.secret))  # fmt: skip
        return response.json()["access_token"]

    async def graphql(self, query: str, variables: dict, token: str) -> dict:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{self.served.base_url}/graphql", json={"query": query, "variables": variables},
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        return response.json()

    async def scalar(self, query) -> int:
        async with self.database.unit_of_work() as session:
            return await session.scalar(query)

    async def stop(self) -> None:
        await asyncio.to_thread(self.served.stop)
        await self.database.dispose()


async def start(settings) -> Node:
    return Node(await asyncio.to_thread(Served(settings).start), Database(settings))


@dataclass
class Federation:
    a: Node
    b: Node
    harvester: clients.NewClient  # A's client for B's institution (maple)
    runtime: SyncRuntime

    async def run(self):
        return await self.runtime.run("peer-a")

    async def wait_for_feed(self, total: int) -> None:
        """A change becomes visible once every older transaction of the cluster has ended (the feed's watermark);
        wait for A's feed to show this many before harvesting."""
        token = await self.a.token(self.harvester)
        for _ in range(900):
            answer = await self.a.graphql(FEED_SIZE, {}, token)
            if answer["data"]["changes"]["totalCount"] >= total:
                return
            await asyncio.sleep(0.1)
        async with self.a.database.unit_of_work() as session:  # the cluster's oldest writer holds the watermark
            oldest = (await session.execute(text(OLDEST_WRITER))).first()
        pytest.fail(f"node A's feed did not reach {total} changes in 90 s; oldest open writer: {oldest}")


async def _seed_peer(database: Database) -> clients.NewClient:
    async with database.unit_of_work() as session:
        leiden = await catalogue.save_institution(session, InstitutionIn(**LEIDEN), origin=PEER)
        await catalogue.save_institution(session, InstitutionIn(**MAPLE), origin=PEER)
        await catalogue.save_specification(session, leiden, SPEC, origin=PEER)
        for name in ("A-1", "A-2", "A-3"):
            await catalogue.save_batch(session, leiden, lot(name), origin=PEER)
        await catalogue.save_donor(session, leiden, DonorIn(pseudonym="DONOR-0001", relation="allogeneic_unrelated"),
                                   origin=PEER)  # fmt: skip
        version = await catalogue.save_dataset(session, leiden, DATASET, origin=PEER)
        dataset = await session.get(Dataset, version.dataset_id)
        await catalogue.publish(session, leiden, dataset.accession)
        return await clients.add_client(session, institution_slug=MAPLE["slug"])


@pytest.fixture
async def federation(stack):
    a_settings = stack.new_database().model_copy(update={"node_id": PEER})
    b_settings = stack.new_database().model_copy(update={"node_id": HOME})
    harvester = await _seed_peer(Database(a_settings))
    a, b = await start(a_settings), await start(b_settings)
    async with b.database.unit_of_work() as session:
        await catalogue.save_institution(session, InstitutionIn(**MAPLE), origin=HOME)
        await sync_service.add_source(
            session, b.settings, name="peer-a", connector="node", institution_slug=MAPLE["slug"],
            schedule="*/5 * * * *", config={"url": a.served.base_url, "peer_node": PEER, "page_size": "100"},
            secrets={"client_id": harvester.client.client_id, "client_secret": harvester.secret},
        )  # fmt: skip
    yield Federation(a, b, harvester, SyncRuntime(b.database, b.settings, retry=FAST_RETRY, sleep=asyncio.sleep))
    for node in (a, b):
        await node.stop()
        stack.drop(node.settings)


async def test_harvest_copies_what_the_feed_shows_and_follows_updates_and_tombstones(federation):
    a, b = federation.a, federation.b
    await federation.wait_for_feed(5)  # specification, three batches, the dataset published (its draft was A's own)
    run = await federation.run()
    assert (run.status, run.read_count, run.upserted_count, run.quarantined_count) == (RunStatus.ok, 5, 5, 0)

    copies = select(func.count()).select_from(Batch).where(Batch.origin_node == PEER)
    assert await b.scalar(copies) == 3
    assert await b.scalar(select(func.count()).select_from(QcResult)) == 3
    assert await b.scalar(select(func.count()).select_from(Donor)) == 0  # other institutions never see donors
    leiden = select(Institution.origin_node).where(Institution.slug == LEIDEN["slug"])
    assert await b.scalar(leiden) == PEER  # the custodian came along, as a copy
    spec_id = await b.scalar(select(Specification.id).where(Specification.origin_node == PEER))
    assert await b.scalar(select(Batch.specification_id).where(Batch.lot_number == "A-1")) == spec_id
    published = select(func.count()).select_from(DatasetVersion).where(DatasetVersion.status == "published")
    assert await b.scalar(published) == 1
    assert await b.scalar(select(func.count()).select_from(DataUseCondition)) == 1
    linked = select(Batch.lot_number).join(dataset_version_batch, dataset_version_batch.c.batch_id == Batch.id)
    assert await b.scalar(linked) == "A-1"
    # Logged with the peer as origin: B's own feed never republishes A's records.
    assert await b.scalar(select(func.count()).select_from(Change).where(Change.origin_node == HOME)) == 0

    # At A: A-2 changes, A-3 goes (deleted through A's API by a submitter of its institution).
    async with a.database.unit_of_work() as session:
        leiden_at_a = await catalogue.repository.institution_by_slug(session, LEIDEN["slug"])
        await catalogue.save_batch(session, leiden_at_a, lot("A-2", viability=88.0), origin=PEER)
        submitter = await clients.add_client(session, institution_slug=LEIDEN["slug"], roles=["submitter"])
        gone = await catalogue.repository.batch_by_lot(session, leiden_at_a.id, "A-3")
    ids = Identifiers(a.settings.secret_key.get_secret_value())
    deleted = await a.graphql(DELETE, {"id": ids.global_id("Batch", gone.id)}, await a.token(submitter))
    assert deleted["data"]["result"]["__typename"] == "RecordDeleted"
    await federation.wait_for_feed(6)  # A-2's update and A-3's tombstone; A-3's creation is no longer shown

    run = await federation.run()
    assert (run.status, run.upserted_count, run.deleted_count) == (RunStatus.ok, 1, 1)
    assert await b.scalar(copies) == 2
    a2_viability = select(QcResult.value).join(Batch, Batch.id == QcResult.batch_id).where(Batch.lot_number == "A-2")
    assert float(await b.scalar(a2_viability)) == 88.0

    run = await federation.run()  # nothing new: the cursor holds
    assert (run.status, run.read_count, run.upserted_count) == (RunStatus.ok, 0, 0)


async def test_local_edits_of_harvested_copies_are_refused(federation):
    b = federation.b
    await federation.wait_for_feed(5)
    await federation.run()
    async with b.database.unit_of_work() as session:
        # A submitter of the custodian, signing in at B: still no edits of A's records there.
        submitter = await clients.add_client(session, institution_slug=LEIDEN["slug"], roles=["submitter"])
    copy_id = local_id(PEER, await _global_id_at_peer(federation, "A-1"))
    ids = Identifiers(b.settings.secret_key.get_secret_value())
    token = await b.token(submitter)
    refused = {
        "__typename": "Forbidden",
        "message": "this batch is a read-only copy harvested from another node; only its origin node changes it",
    }
    answer = await b.graphql(DELETE, {"id": ids.global_id("Batch", copy_id)}, token)
    assert answer["data"]["result"] == refused
    edit = {"lotNumber": "A-1", "productName": "BM-MSC lot A-1 (edited)", "cellType": BM_MSC, "tissue": BONE_MARROW}
    assert (await b.graphql(SAVE, {"input": edit}, token))["data"]["result"] == refused
    assert await b.scalar(select(Batch.product_name).where(Batch.id == copy_id)) == "BM-MSC lot A-1"


async def _global_id_at_peer(federation: Federation, lot_number: str) -> str:
    async with federation.a.database.unit_of_work() as session:
        batch_id = await session.scalar(select(Batch.id).where(Batch.lot_number == lot_number))
    return Identifiers(federation.a.settings.secret_key.get_secret_value()).global_id("Batch", batch_id)


async def test_the_peer_going_down_mid_run_and_coming_back(federation):
    a, b = federation.a, federation.b
    async with a.database.unit_of_work() as session:
        leiden = await catalogue.repository.institution_by_slug(session, LEIDEN["slug"])
        for i in range(240):
            await catalogue.save_batch(session, leiden, BatchIn(**batch_record(f"BULK-{i:03}")), origin=PEER)
    await federation.wait_for_feed(245)  # three pages of 100
    port = int(a.served.base_url.rsplit(":", 1)[1])
    outage = threading.Event()

    def pull_the_plug(stream: str, landed: int) -> None:
        if outage.is_set():
            return
        outage.set()  # after the first page: stop A, and serve it again on the same port a moment later
        a.served.stop()

        def come_back():
            time.sleep(1.0)
            a.served = Served(a.settings.model_copy(update={"public_url": None}), port=port).start()

        threading.Thread(target=come_back, daemon=True).start()

    federation.runtime.progress = pull_the_plug
    run = await federation.run()
    assert outage.is_set()
    assert (run.status, run.read_count, run.quarantined_count) == (RunStatus.ok, 245, 0)
    assert await b.scalar(select(func.count()).select_from(Batch).where(Batch.origin_node == PEER)) == 243
    bookmark = await b.scalar(select(SyncBookmark.value))
    assert bookmark["after"]  # the feed cursor, ready for the next run


@pytest.mark.parametrize("cursor", [None, "c1"])
async def test_a_peer_promising_more_changes_without_a_new_cursor_fails_the_read(cursor):
    class StuckPeer:
        """Answers every request alike: one change, more to come, and a cursor that does not move."""

        peer, asked = "node-stuck", []

        async def feed(self, after):
            self.asked.append(after)
            node = {"operation": "delete", "recordType": "Batch", "recordId": "QmF0Y2g6MQ=="}
            return {"pageInfo": {"hasNextPage": True, "endCursor": cursor}, "edges": [{"node": node}]}

    peer, pages = StuckPeer(), []
    with pytest.raises(SourceError, match="says more changes follow but gives no new cursor"):
        async for page in Changes(peer).read_pages({"after": "c1"}):
            pages.append(page)
            assert len(pages) < 3, "the same page read again and again"
    assert peer.asked == ["c1"] and [p.bookmark for p in pages] == [{"after": "c1"}]
