"""Access over HTTP: the documented operations on a seeded database of this module's own (committed), with
tokens from the dev issuers. Lowlands' reader requests Maple's restricted HMB dataset; the stewards of Lowlands
and Leiden cannot decide it or see it in their queues; Maple's steward approves."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

OPERATIONS = Path(__file__).resolve().parents[2] / "graphql_schema" / "operations"
START = date.today()


def operation(name: str) -> str:
    return (OPERATIONS / f"{name}.graphql").read_text()


async def run(api, name: str, variables: dict, headers: dict, operation_name: str | None = None) -> dict:
    body = {"query": operation(name), "variables": variables, "operationName": operation_name}
    response = await api.client.post("/graphql", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def dataset_of(api, slug: str) -> str:
    """A published dataset of the institution whose conditions an HMB purpose from anywhere can meet (no DS, POA
    or GS condition)."""
    query = "{ datasets(first: 100) { nodes { id institution { slug } latestVersion { conditions { term } } } } }"
    result = await api.query(query, headers=api.token("leiden-scgt"))
    for node in result["data"]["datasets"]["nodes"]:
        terms = {c["term"] for c in node["latestVersion"]["conditions"]}
        if node["institution"]["slug"] == slug and not terms & {"DUO:0000007", "DUO:0000011", "DUO:0000022"}:
            return node["id"]
    pytest.fail(f"the seeded consortium has no dataset of {slug} for an HMB purpose")


def request_input(dataset_id: str, **changes) -> dict:
    return {
        "datasets": [dataset_id], "purposeTerms": ["DUO:0000006"], "commercialUse": False,
        "laySummary": "Potency markers of MSC after thaw", "ethicsReference": "METC-2026-117",
        "periodStart": START.isoformat(), "periodEnd": (START + timedelta(days=365)).isoformat(), **changes,
    }  # fmt: skip


async def test_request_decide_and_the_agreement_grants_access(api):
    maple_dataset = await dataset_of(api, "maple-ccrm")
    alice, a_steward = api.token("lowlands-regmed", "alice"), api.token("maple-ccrm", "stella")
    result = await run(api, "request_access", {"input": request_input(maple_dataset)}, alice)
    assert "errors" not in result, result
    request = result["data"]["requestAccess"]
    assert request["status"] == "submitted"
    [part] = request["datasets"]
    assert part["custodian"]["slug"] == "maple-ccrm"
    assert part["verdict"]["compatibility"] == "needs_review"
    assert {o["shorthand"] for o in part["verdict"]["obligations"]} == {"IRB", "PUB"}

    # Stewards of other institutions: not in their queue; approving answers exactly like a missing request.
    missing_id = request["id"][:-2] + ("AA" if not request["id"].endswith("AA") else "BB")
    for slug in ("lowlands-regmed", "leiden-scgt"):
        outsider = api.token(slug, "stella")
        queue = await run(api, "steward_decides", {"first": 50}, outsider, "AccessRequestQueue")
        assert request["id"] not in [n["id"] for n in queue["data"]["accessRequestQueue"]["nodes"]]
        refused = await run(api, "steward_decides", {"id": request["id"]}, outsider, "ApproveAccessRequest")
        missing = await run(api, "steward_decides", {"id": missing_id}, outsider, "ApproveAccessRequest")
        assert refused["errors"][0]["extensions"]["code"] == missing["errors"][0]["extensions"]["code"] == "not_found"

    queue = await run(api, "steward_decides", {"first": 50}, a_steward, "AccessRequestQueue")
    queued = {n["id"]: n for n in queue["data"]["accessRequestQueue"]["nodes"]}
    assert queued[request["id"]]["requesterInstitution"]["slug"] == "lowlands-regmed"
    terms = {"publicationTerms": "acknowledge Maple CCRM", "exportPolicy": {"quasi_identifier": "drop"}}
    approved = await run(
        api, "steward_decides", {"id": request["id"], "terms": terms}, a_steward, "ApproveAccessRequest"
    )
    assert "errors" not in approved, approved
    agreement = approved["data"]["approveAccessRequest"]
    assert (agreement["status"], agreement["inForce"], agreement["transferMechanism"]) == ("active", True, "intra_eea")
    assert agreement["exportPolicy"]["quasi_identifier"] == "drop"

    mine = await run(api, "my_agreements", {"first": 10, "inForceOnly": True}, alice)
    [listed] = [n for n in mine["data"]["myAgreements"]["nodes"] if n["id"] == agreement["id"]]
    assert listed["datasets"][0]["id"] == maple_dataset
    assert {p["role"]: p["institution"]["slug"] for p in listed["parties"]} == {
        "provider": "maple-ccrm", "recipient": "lowlands-regmed",
    }  # fmt: skip
    # Another institution's member sees neither the request nor the agreement.
    outsider = api.token("leiden-scgt", "stella")
    nothing = await api.query(
        "query ($id: ID!) { accessRequest(id: $id) { id } myAgreements(first: 10) { totalCount } }",
        {"id": request["id"]}, outsider,
    )  # fmt: skip
    assert nothing["data"]["accessRequest"] is None
    assert agreement["id"] not in str(nothing)


async def test_bad_input_names_the_field_and_the_canadian_gate_holds(api):
    stroma_dataset = await dataset_of(api, "stroma-bio")
    carol = api.token("maple-ccrm", "alice")
    bad = await run(
        api, "request_access", {"input": request_input(stroma_dataset, purposeTerms=["DUO:0000004"])}, carol
    )
    error = bad["errors"][0]
    assert error["extensions"]["code"] == "validation_failed"
    assert error["extensions"]["field"] == "purpose_terms[0]"

    result = await run(api, "request_access", {"input": request_input(stroma_dataset)}, carol)
    request_id = result["data"]["requestAccess"]["id"]
    steward = api.token("stroma-bio", "stella")
    # maple-ccrm's recorded basis is `adequacy` in the demo consortium: the default mechanism follows it, and an
    # intra-EEA mechanism for a Canadian recipient is refused with the field named.
    gate = await run(
        api, "steward_decides", {"id": request_id, "terms": {"transferMechanism": "intra_eea"}}, steward,
        "ApproveAccessRequest",
    )  # fmt: skip
    assert gate["errors"][0]["extensions"]["code"] == "validation_failed"
    assert gate["errors"][0]["extensions"]["field"] == "terms.transfer_mechanism"
    approved = await run(api, "steward_decides", {"id": request_id}, steward, "ApproveAccessRequest")
    assert approved["data"]["approveAccessRequest"]["transferMechanism"] == "adequacy"


async def test_a_co_custodian_sees_the_request_but_not_another_custodians_agreement_on_it(api):
    """A request naming two custodians' datasets is visible to both; the agreement one of them makes with the
    recipient is not the other's to see, through the request any more than through myAgreements."""
    maple, stroma = await dataset_of(api, "maple-ccrm"), await dataset_of(api, "stroma-bio")
    alice = api.token("lowlands-regmed", "alice")
    submitted = await run(api, "request_access", {"input": request_input(maple, datasets=[maple, stroma])}, alice)
    request_id = submitted["data"]["requestAccess"]["id"]
    terms = {"exportPolicy": {"quasi_identifier": "keep"}, "publicationTerms": "stroma's own terms"}
    approved = await run(
        api, "steward_decides", {"id": request_id, "terms": terms}, api.token("stroma-bio", "stella"),
        "ApproveAccessRequest",
    )  # fmt: skip
    agreement_id = approved["data"]["approveAccessRequest"]["id"]
    query = "query($id: ID!) { accessRequest(id: $id) { id agreements { id publicationTerms } } }"
    maple_sees = await api.query(query, {"id": request_id}, api.token("maple-ccrm", "stella"))
    assert maple_sees["data"]["accessRequest"] == {"id": request_id, "agreements": []}
    for party in (api.token("stroma-bio", "stella"), alice):
        seen = await api.query(query, {"id": request_id}, party)
        assert [a["id"] for a in seen["data"]["accessRequest"]["agreements"]] == [agreement_id]
