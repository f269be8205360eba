"""File mutations over HTTP: upload → complete → download with a plain client, and hidden = missing everywhere."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import httpx
import pytest
from tests.storage.files import get, published_file, put

from cellcommons.db import Database
from cellcommons.graphql.ids import Identifiers
from cellcommons.storage import ObjectStore

LEIDEN, MAPLE = "leiden-scgt", "maple-ccrm"
OPERATIONS = Path(__file__).resolve().parents[2] / "graphql_schema" / "operations"
CONTENT = b"donor,marker,percent_positive\nD-01,CD73,98.2\n" * 200
PART = 5 * 1024 * 1024  # S3's smallest part

REQUEST = """mutation($d: ID!, $sha: String!, $size: Float!) {
  requestUpload(distributionId: $d, sha256: $sha, sizeBytes: $size) { uploadId url method expiresAt } }"""
COMPLETE = "mutation($u: ID!) { completeUpload(uploadId: $u) { id fileName sizeBytes sha256 } }"
DOWNLOAD = "mutation($d: ID!) { downloadUrl(distributionId: $d) { url expiresAt distribution { fileName sha256 } } }"
MANIFEST = """mutation($v: ID!) { downloadManifest(datasetVersionId: $v) {
  datasetVersionId expiresAt files { url distribution { fileName sizeBytes sha256 } } } }"""


@pytest.fixture(scope="module")
async def files(api):
    """A Leiden non_public draft file and a Leiden restricted published file, uploaded and committed."""
    database = Database(api.settings)
    store = ObjectStore.from_settings(api.settings)
    try:
        hidden = await published_file(database, store, api.settings, LEIDEN, "non_public", CONTENT)
        shared = await published_file(database, store, api.settings, LEIDEN, "restricted", CONTENT)
    finally:
        await database.dispose()
    ids = Identifiers(api.settings.secret_key.get_secret_value())
    gid = lambda kind, key: ids.global_id(kind, key)  # noqa: E731
    return {
        "hidden": gid("Distribution", hidden.distribution_id),
        "hidden_version": gid("DatasetVersion", hidden.version_id),
        "shared": gid("Distribution", shared.distribution_id),
        "missing": gid("Distribution", uuid.uuid4()),
        "missing_version": gid("DatasetVersion", uuid.uuid4()),
        "missing_upload": gid("FileUpload", uuid.uuid4()),
    }


def _error(result: dict) -> dict:
    assert result["data"] is None or not any(result["data"].values()), result
    (error,) = result["errors"]
    return {"message": error["message"], **error["extensions"]}


async def _draft_distribution(api, headers) -> str:
    """A file of one of Leiden's seeded non_public datasets (drafts), found through the API."""
    query = "{ datasets(first: 100) { nodes { institution { slug } latestVersion { status distributions { id } } } } }"
    nodes = (await api.query(query, headers=headers))["data"]["datasets"]["nodes"]
    return next(
        n["latestVersion"]["distributions"][0]["id"]
        for n in nodes
        if n["institution"]["slug"] == LEIDEN and n["latestVersion"]["status"] == "draft"
    )


async def test_upload_complete_and_download_through_the_api(api):
    sam, stella = api.token(LEIDEN, "sam"), api.token(LEIDEN, "stella")
    distribution = await _draft_distribution(api, sam)
    variables = {"d": distribution, "sha": hashlib.sha256(CONTENT).hexdigest(), "size": len(CONTENT)}
    ticket = (await api.query(REQUEST, variables, sam))["data"]["requestUpload"]
    assert ticket["method"] == "PUT" and ticket["uploadId"].startswith("FileUpload_")
    assert await put(ticket["url"], CONTENT) == 200
    done = (await api.query(COMPLETE, {"u": ticket["uploadId"]}, sam))["data"]["completeUpload"]
    assert done == {"id": distribution, "fileName": done["fileName"], "sizeBytes": len(CONTENT),
                    "sha256": variables["sha"]}  # fmt: skip
    link = (await api.query(DOWNLOAD, {"d": distribution}, stella))["data"]["downloadUrl"]
    assert hashlib.sha256((await get(link["url"])).content).hexdigest() == variables["sha"]
    assert "storage" not in str(done) and "files/" not in str(link["distribution"])


async def test_a_checksum_mismatch_is_reported_and_the_rejection_is_kept(api):
    sam = api.token(LEIDEN, "sam")
    distribution = await _draft_distribution(api, sam)
    variables = {"d": distribution, "sha": hashlib.sha256(b"other").hexdigest(), "size": len(CONTENT)}
    ticket = (await api.query(REQUEST, variables, sam))["data"]["requestUpload"]
    assert await put(ticket["url"], CONTENT) == 200
    first = _error(await api.query(COMPLETE, {"u": ticket["uploadId"]}, sam))
    assert first["code"] == "checksum_mismatch" and first["field"] == "sha256"
    again = _error(await api.query(COMPLETE, {"u": ticket["uploadId"]}, sam))
    assert again["code"] == "conflict" and "rejected" in again["message"]


async def test_bad_arguments_name_the_field(api):
    sam = api.token(LEIDEN, "sam")
    distribution = await _draft_distribution(api, sam)
    bad_sha = _error(await api.query(REQUEST, {"d": distribution, "sha": "abc", "size": 1}, sam))
    assert (bad_sha["code"], bad_sha["field"]) == ("invalid_input", "sha256")
    bad_size = _error(await api.query(REQUEST, {"d": distribution, "sha": "a" * 64, "size": 1.5}, sam))
    assert (bad_size["code"], bad_size["field"]) == ("invalid_input", "sizeBytes")
    query = "mutation($d: ID!) { downloadUrl(distributionId: $d, expiresIn: 901) { url } }"
    too_long = _error(await api.query(query, {"d": distribution}, api.token(LEIDEN, "stella")))
    assert (too_long["code"], too_long["field"]) == ("invalid_input", "expiresIn")


async def test_another_institution_gets_missing_for_a_non_public_file_by_every_id_taking_field(api, files):
    maple = api.token(MAPLE, "sam")
    sha = hashlib.sha256(CONTENT).hexdigest()
    pairs = [
        (REQUEST, {"d": files["hidden"], "sha": sha, "size": 1}, {"d": files["missing"], "sha": sha, "size": 1}),
        (DOWNLOAD, {"d": files["hidden"]}, {"d": files["missing"]}),
        (MANIFEST, {"v": files["hidden_version"]}, {"v": files["missing_version"]}),
    ]
    for operation, hidden, missing in pairs:
        as_hidden = _error(await api.query(operation, hidden, maple))
        assert as_hidden == _error(await api.query(operation, missing, maple))
        assert as_hidden["code"] == "not_found"
    node = "query($id: ID!) { node(id: $id) { id } }"
    assert (await api.query(node, {"id": files["hidden"]}, maple))["data"] == {"node": None}
    assert (await api.query(node, {"id": files["shared"]}, maple))["data"]["node"]["id"] == files["shared"]
    # Seen (restricted, published) but not downloadable without a DUA: the same answer as missing.
    assert _error(await api.query(DOWNLOAD, {"d": files["shared"]}, maple)) == _error(
        await api.query(DOWNLOAD, {"d": files["missing"]}, maple)
    )


async def test_the_owner_gets_a_manifest(api, files):
    result = await api.query(MANIFEST, {"v": files["hidden_version"]}, api.token(LEIDEN, "stella"))
    manifest = result["data"]["downloadManifest"]
    (entry,) = manifest["files"]
    assert entry["distribution"] == {"fileName": "cells.csv", "sizeBytes": len(CONTENT),
                                     "sha256": hashlib.sha256(CONTENT).hexdigest()}  # fmt: skip
    assert (await get(entry["url"])).content == CONTENT


async def test_the_documented_file_operations_run(api, files):
    stella = api.token(LEIDEN, "stella")
    single = (OPERATIONS / "download_a_file.graphql").read_text()
    link = (await api.query(single, {"distributionId": files["shared"]}, stella))["data"]["downloadUrl"]
    assert (await get(link["url"])).content == CONTENT
    manifest = (OPERATIONS / "download_a_dataset_version.graphql").read_text()
    result = await api.query(manifest, {"datasetVersionId": files["hidden_version"], "expiresIn": 60}, stella)
    assert [f["distribution"]["fileName"] for f in result["data"]["downloadManifest"]["files"]] == ["cells.csv"]
    upload = (OPERATIONS / "upload_a_file.graphql").read_text()
    sam = api.token(LEIDEN, "sam")
    variables = {"distributionId": await _draft_distribution(api, sam), "sha256": hashlib.sha256(CONTENT).hexdigest(),
                 "sizeBytes": len(CONTENT)}  # fmt: skip
    body = {"query": upload, "variables": variables, "operationName": "RequestUpload"}
    ticket = (await api.client.post("/graphql", json=body, headers=sam)).json()["data"]["requestUpload"]
    assert await put(ticket["url"], CONTENT) == 200
    body = {"query": upload, "variables": {"uploadId": ticket["uploadId"]}, "operationName": "CompleteUpload"}
    done = (await api.client.post("/graphql", json=body, headers=sam)).json()["data"]["completeUpload"]
    assert done["sha256"] == variables["sha256"]


async def _operation(api, document: str, name: str, variables: dict, headers) -> dict:
    body = {"query": document, "variables": variables, "operationName": name}
    return (await api.client.post("/graphql", json=body, headers=headers)).json()


async def test_the_documented_multipart_operations_upload_in_parts_and_abort(api):
    """Three parts (5 MiB, 5 MiB, the rest) PUT to their presigned URLs, completed with their ETags."""
    large = os.urandom(2 * PART + 999)
    operations = (OPERATIONS / "upload_a_large_file.graphql").read_text()
    sam = api.token(LEIDEN, "sam")
    declared = {"distributionId": await _draft_distribution(api, sam), "sha256": hashlib.sha256(large).hexdigest(),
                "sizeBytes": len(large), "partSizeBytes": PART}  # fmt: skip
    ticket = (await _operation(api, operations, "RequestMultipartUpload", declared, sam))["data"]
    ticket = ticket["requestMultipartUpload"]
    assert (ticket["partCount"], ticket["partSizeBytes"], len(ticket["parts"])) == (3, PART, 3)
    fresh = await _operation(api, operations, "UploadPartUrls", {"uploadId": ticket["uploadId"], "partNumbers": [3]},
                             sam)  # fmt: skip
    assert fresh["data"]["uploadPartUrls"][0]["offset"] == 2 * PART
    parts = []
    async with httpx.AsyncClient(timeout=120) as http:
        for part in ticket["parts"]:
            start, size = int(part["offset"]), int(part["sizeBytes"])
            answer = await http.put(part["url"], content=large[start : start + size])
            parts.append({"partNumber": part["partNumber"], "etag": answer.headers["etag"]})
    done = await _operation(api, operations, "CompleteMultipartUpload", {"uploadId": ticket["uploadId"],
                                                                        "parts": parts}, sam)  # fmt: skip
    assert done["data"]["completeUpload"]["sha256"] == declared["sha256"]
    assert done["data"]["completeUpload"]["sizeBytes"] == len(large)

    again = (await _operation(api, operations, "RequestMultipartUpload", declared, sam))["data"]
    upload_id = again["requestMultipartUpload"]["uploadId"]
    assert (await _operation(api, operations, "AbortUpload", {"uploadId": upload_id}, sam))["data"] == {
        "abortUpload": upload_id
    }
    late = _error(await _operation(api, operations, "CompleteMultipartUpload", {"uploadId": upload_id, "parts": parts},
                                   sam))  # fmt: skip
    assert late["code"] == "conflict" and "aborted" in late["message"]


async def test_multipart_arguments_and_other_institutions_uploads_answer_by_field(api):
    sam, maple = api.token(LEIDEN, "sam"), api.token(MAPLE, "sam")
    operations = (OPERATIONS / "upload_a_large_file.graphql").read_text()
    declared = {"distributionId": await _draft_distribution(api, sam), "sha256": "a" * 64, "sizeBytes": 10 * 1024**3,
                "partSizeBytes": 1024}  # fmt: skip
    small = _error(await _operation(api, operations, "RequestMultipartUpload", declared, sam))
    assert (small["code"], small["field"]) == ("invalid_input", "partSizeBytes")
    ticket = await _operation(api, operations, "RequestMultipartUpload", {**declared, "partSizeBytes": None}, sam)
    upload_id = ticket["data"]["requestMultipartUpload"]["uploadId"]
    assert ticket["data"]["requestMultipartUpload"]["partCount"] == 160  # 10 GiB in 64 MiB parts
    wrong = _error(await _operation(api, operations, "CompleteMultipartUpload", {"uploadId": upload_id, "parts": []},
                                    sam))  # fmt: skip
    assert (wrong["code"], wrong["field"]) == ("invalid_input", "parts")
    for name, variables in [("UploadPartUrls", {"uploadId": upload_id, "partNumbers": [1]}),
                            ("AbortUpload", {"uploadId": upload_id}),
                            ("CompleteMultipartUpload", {"uploadId": upload_id, "parts": []})]:  # fmt: skip
        stranger = _error(await _operation(api, operations, name, variables, maple))
        assert (stranger["code"], stranger["field"]) == ("not_found", "uploadId")
    assert (await _operation(api, operations, "AbortUpload", {"uploadId": upload_id}, sam))["data"]
