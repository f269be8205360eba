"""Exports over HTTP with the documented operation (graphql_schema/operations/request_export.graphql), on the
seeded database of this module's own with tokens from the dev issuers: Lowlands gets an agreement for a Maple
dataset, exports its batches with QC results, a worker runs the job, and the file comes by presigned URL."""

from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq
from tests.access.test_graphql import dataset_of, request_input, run

from cellcommons.db import Database
from cellcommons.exports.worker import ExportWorker
from cellcommons.storage import ObjectStore


async def agreement_for(api, recipient: str) -> tuple[str, str]:
    """The recipient's agreement for a Maple dataset (requested, approved by Maple's steward) and the id of
    the dataset's latest version."""
    dataset_id = await dataset_of(api, "maple-ccrm")
    asked = await run(api, "request_access", {"input": request_input(dataset_id)}, api.token(recipient, "alice"))
    assert "errors" not in asked, asked
    request_id = asked["data"]["requestAccess"]["id"]
    terms = {"exportPolicy": {"quasi_identifier": "generalise"}}
    approved = await run(api, "steward_decides", {"id": request_id, "terms": terms}, api.token("maple-ccrm", "stella"),
                         "ApproveAccessRequest")  # fmt: skip
    assert "errors" not in approved, approved
    version = await api.query(
        "query ($id: ID!) { node(id: $id) { ... on Dataset { latestVersion { id } } } }", {"id": dataset_id},
        api.token(recipient),
    )  # fmt: skip
    return approved["data"]["approveAccessRequest"]["id"], version["data"]["node"]["latestVersion"]["id"]


async def run_queued(settings) -> None:
    database = Database(settings)
    try:
        worker = ExportWorker(database, ObjectStore.from_settings(settings), settings)
        assert await worker.run_next() is not None
    finally:
        await database.dispose()


async def test_request_follow_and_download_an_export(api):
    agreement_id, version_id = await agreement_for(api, "lowlands-regmed")
    alice = api.token("lowlands-regmed", "alice")

    columns = ["lot_number", "test_type", "manufactured_on"]
    ask = {"agreementId": agreement_id, "datasetVersionId": version_id, "columns": columns}
    requested = await run(api, "request_export", {"input": ask}, alice, "RequestExport")
    assert "errors" not in requested, requested
    export = requested["data"]["requestExport"]
    assert export["status"] == "queued" and export["badRows"] == "fail"
    assert [p["treatment"] for p in export["policy"]] == ["keep", "keep", "generalise"]

    await run_queued(api.settings)
    status = await run(api, "request_export", {"id": export["id"]}, alice, "ExportStatus")
    done = status["data"]["export"]
    assert (done["status"], done["error"], done["agreementId"]) == ("succeeded", None, agreement_id)
    assert done["rowsWritten"] > 0 and len(done["sha256"]) == 64

    issued = await run(api, "request_export", {"id": export["id"], "expiresIn": 60}, alice, "ExportDownloadUrl")
    assert "errors" not in issued, issued
    async with httpx.AsyncClient(timeout=10) as http:
        body = (await http.get(issued["data"]["exportDownloadUrl"]["url"])).content
    table = pq.read_table(io.BytesIO(body))
    assert (
        table.column_names == ["lot_number", "test_type", "manufactured_on"] and table.num_rows == done["rowsWritten"]
    )
    assert pq.read_schema(io.BytesIO(body)).metadata[b"cellcommons.recipient"] == b"lowlands-regmed"

    # Another institution: the export is not there, and asking for its file answers like a missing one.
    outsider = api.token("leiden-scgt", "alice")
    hidden = await run(api, "request_export", {"id": export["id"]}, outsider, "ExportStatus")
    assert hidden["data"]["export"] is None
    refused = await run(api, "request_export", {"id": export["id"]}, outsider, "ExportDownloadUrl")
    assert refused["errors"][0]["extensions"]["code"] == "not_found"


async def test_a_forbidden_column_and_an_agreement_not_held_name_the_field(api):
    agreement_id, version_id = await agreement_for(api, "leiden-scgt")
    ask = {"agreementId": agreement_id, "datasetVersionId": version_id, "columns": ["lot_number", "no_such_column"]}
    refused = await run(api, "request_export", {"input": ask}, api.token("leiden-scgt"), "RequestExport")
    error = refused["errors"][0]["extensions"]
    assert (error["code"], error["field"]) == ("export_column_forbidden", "columns[1]")

    ask["columns"] = None
    theirs = await run(api, "request_export", {"input": ask}, api.token("lowlands-regmed"), "RequestExport")
    assert (theirs["errors"][0]["extensions"]["code"], theirs["data"]) == ("not_found", None)
