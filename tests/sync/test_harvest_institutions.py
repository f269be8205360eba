"""A peer's feed brings copies of its own institutions' records only: a record it files under this node's
institution, or under another peer's, is quarantined naming the institution, and changes nothing of it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from tests.sync.conftest import SLUG, batch_record, memory_connector

from cellcommons.catalogue.models import Batch, Institution
from cellcommons.sync.harvest import HarvestedRecord
from cellcommons.sync.models import QuarantinedRecord, RunStatus
from cellcommons.sync.sdk import Connector, Page, Record, Stream

PEER = "peer-b"
FACTS = {"country": "NL", "sector": "non_profit", "transfer_basis": "eea"}
OURS = {"slug": SLUG, "name": "Leiden SCGT", **FACTS}
PEERS_OWN = {"slug": "maple-cells", "name": "Maple Cells", **FACTS}
ROR_ID = "05xvt9f17"


def peer_feed(records: list[dict[str, Any]]) -> type[Connector]:
    """A connector handing over one page of `PEER`'s change feed."""

    class Changes(Stream):
        name = "changes"
        target = "node_record"
        natural_key = ("record_id",)
        schema = HarvestedRecord
        origin = PEER

        async def read_pages(self, bookmark):
            yield Page([Record(r) for r in records], {"after": "1"})

    class Peer(Connector):
        def streams(self) -> list[Stream]:
            return [Changes()]

    return Peer


def change(record_id: str, institution: dict[str, Any], lot: str) -> dict[str, Any]:
    return {"record_id": record_id, "record_type": "Batch", "institution": institution,
            "record": batch_record(lot, product_name=f"BM-MSC {lot} as {PEER} has it")}  # fmt: skip


async def harvest(env, records: list[dict[str, Any]]):
    await env.add_source("peer")
    return await env.runtime(peer_feed(records)).run("peer")


async def quarantined(env, key: str) -> list[dict[str, Any]]:
    return await env.scalar(select(QuarantinedRecord.errors).where(QuarantinedRecord.record_key == key))


async def test_a_peer_naming_this_nodes_institution_is_refused_and_our_own_lot_still_lands(env):
    run = await harvest(env, [change("Batch_0001", OURS, "LOT-42"), change("Batch_0002", PEERS_OWN, "LOT-7")])
    assert (run.status, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 1, 1)
    [finding] = await quarantined(env, "Batch_0001")
    assert (finding["code"], finding["field"]) == ("institution_of_another_node", "institution.slug")
    assert f"'{SLUG}'" in finding["message"] and PEER in finding["message"]
    assert await env.lots() == ["LOT-7"]  # the peer's own institution's lot, as a copy under its institution
    assert await env.scalar(select(Institution.origin_node).where(Institution.slug == "maple-cells")) == PEER

    await env.add_source("lims")
    local = await env.runtime(memory_connector([batch_record("LOT-42")])).run("lims")
    assert (local.status, local.upserted_count, local.quarantined_count) == (RunStatus.ok, 1, 0)
    ours = await env.scalar(select(Batch.institution_id).where(Batch.lot_number == "LOT-42"))
    assert ours == env.institution_id


async def test_a_peer_naming_another_peers_institution_is_refused(env):
    async with env.database.unit_of_work() as session:
        await session.execute(update(Institution).where(Institution.slug == SLUG).values(origin_node="peer-c"))
    run = await harvest(env, [change("Batch_0001", OURS, "LOT-42")])
    assert (run.upserted_count, run.quarantined_count) == (0, 1)
    [finding] = await quarantined(env, "Batch_0001")
    assert (finding["code"], finding["field"]) == ("institution_of_another_node", "institution.slug")
    assert await env.lots() == []


async def test_a_peer_naming_this_nodes_institution_under_another_slug_is_refused(env):
    async with env.database.unit_of_work() as session:
        await session.execute(update(Institution).where(Institution.slug == SLUG).values(ror_id=ROR_ID))
    run = await harvest(env, [change("Batch_0001", PEERS_OWN | {"ror_id": ROR_ID}, "LOT-42")])
    assert (run.status, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 0, 1)
    [finding] = await quarantined(env, "Batch_0001")
    assert (finding["code"], finding["field"]) == ("institution_of_another_node", "institution.ror_id")
    assert await env.lots() == []
    assert await env.scalar(select(Institution.id).where(Institution.slug == "maple-cells")) is None
