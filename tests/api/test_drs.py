"""GA4GH DRS v1 over HTTP: objects with sizes and checksums, access URLs under the policy, hidden = missing."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the seeded in-process API)
from tests.storage.files import draft_dataset, get, institution, published_file

from cellcommons.db import Database
from cellcommons.graphql.ids import Identifiers
from cellcommons.institutions import clients
from cellcommons.storage import ObjectStore

LEIDEN, MAPLE = "leiden-scgt", "maple-ccrm"
CONTENT = b"lot,viability\nLDN-1,93.5\n" * 300
DRS = "/ga4gh/drs/v1"


@pytest.fixture(scope="module")
async def objects(api):  # noqa: F811
    database = Database(api.settings)
    store = ObjectStore.from_settings(api.settings)
    try:
        hidden = await published_file(database, store, api.settings, LEIDEN, "non_public", CONTENT)
        shared = await published_file(database, store, api.settings, LEIDEN, "restricted", CONTENT)
        async with database.unit_of_work() as session:  # a draft whose file is not uploaded yet
            draft = await draft_dataset(session, await institution(session, LEIDEN), ["later.csv"])
            pending = draft.distributions[0].id
    finally:
        await database.dispose()
    ids = Identifiers(api.settings.secret_key.get_secret_value())
    return {
        "hidden": ids.global_id("Distribution", hidden.distribution_id),
        "shared": ids.global_id("Distribution", shared.distribution_id),
        "missing": ids.global_id("Distribution", uuid.uuid4()),
        "pending": ids.global_id("Distribution", pending),
        "version": ids.global_id("DatasetVersion", shared.version_id),
    }


async def test_the_owner_gets_the_object_and_an_access_url_that_downloads_it(api, objects):  # noqa: F811
    stella = api.token(LEIDEN, "stella")
    response = await api.client.get(f"{DRS}/objects/{objects['shared']}", headers=stella)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == objects["shared"] and body["self_uri"].endswith(f"/{objects['shared']}")
    assert body["self_uri"].startswith("drs://")
    assert (body["size"], body["name"], body["mime_type"]) == (len(CONTENT), "cells.csv", "text/csv")
    assert body["checksums"] == [{"type": "sha-256", "checksum": hashlib.sha256(CONTENT).hexdigest()}]
    (method,) = body["access_methods"]
    access = await api.client.get(f"{DRS}/objects/{objects['shared']}/access/{method['access_id']}", headers=stella)
    assert access.status_code == 200
    assert (await get(access.json()["url"])).content == CONTENT


async def test_another_institution_sees_shared_metadata_but_gets_no_access(api, objects):  # noqa: F811
    maple = api.token(MAPLE, "stella")
    body = (await api.client.get(f"{DRS}/objects/{objects['shared']}", headers=maple)).json()
    assert body["size"] == len(CONTENT) and "access_methods" not in body
    denied = await api.client.get(f"{DRS}/objects/{objects['shared']}/access/presigned", headers=maple)
    missing = await api.client.get(f"{DRS}/objects/{objects['missing']}/access/presigned", headers=maple)
    assert denied.status_code == missing.status_code == 404
    assert denied.json() == missing.json()


@pytest.mark.parametrize("path", ["", "/access/presigned"])
async def test_a_hidden_object_answers_exactly_like_a_missing_one(api, objects, path):  # noqa: F811
    for headers in (api.token(MAPLE, "stella"), {}):
        hidden = await api.client.get(f"{DRS}/objects/{objects['hidden']}{path}", headers=headers)
        missing = await api.client.get(f"{DRS}/objects/{objects['missing']}{path}", headers=headers)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json() == {"msg": hidden.json()["msg"], "status_code": 404}


@pytest.mark.parametrize("path", ["", "/access/presigned"])
async def test_a_file_not_uploaded_yet_is_no_object_even_for_its_owner(api, objects, path):  # noqa: F811
    stella = api.token(LEIDEN, "stella")
    pending = await api.client.get(f"{DRS}/objects/{objects['pending']}{path}", headers=stella)
    missing = await api.client.get(f"{DRS}/objects/{objects['missing']}{path}", headers=stella)
    assert pending.status_code == missing.status_code == 404
    assert pending.json() == missing.json() == {"msg": "no DRS object with this id", "status_code": 404}


async def test_other_ids_and_access_ids_are_not_objects(api, objects):  # noqa: F811
    stella = api.token(LEIDEN, "stella")
    not_a_file = await api.client.get(f"{DRS}/objects/{objects['version']}", headers=stella)
    assert not_a_file.status_code == 404
    garbage = await api.client.get(f"{DRS}/objects/not-an-id", headers=stella)
    assert garbage.status_code == 400 and garbage.json()["status_code"] == 400
    unknown = await api.client.get(f"{DRS}/objects/{objects['shared']}/access/s3", headers=stella)
    assert unknown.status_code == 404


@pytest.mark.parametrize("path", ["", "/access/presigned"])
async def test_a_bad_or_revoked_token_gets_a_bearer_challenge(api, objects, path):  # noqa: F811
    database = Database(api.settings)
    try:
        async with database.unit_of_work() as session:
            added = await clients.add_client(session, institution_slug=LEIDEN, roles=["steward"])
        issued = await api.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(added.client.client_id, added.secret)
        )
        assert issued.status_code == 200, issued.text
        async with database.unit_of_work() as session:
            await clients.revoke_client(session, added.client.client_id)
    finally:
        await database.dispose()
    for token in ("not-a-token", issued.json()["access_token"]):
        response = await api.client.get(
            f"{DRS}/objects/{objects['shared']}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401 and response.json()["status_code"] == 401  # the DRS shape still
        # RFC 6750 §3: a 401 for a bad token names the scheme and the error, as the platform's other endpoints do.
        challenge = f'Bearer error="invalid_token", error_description="{response.json()["msg"]}"'
        assert response.headers.get("www-authenticate") == challenge, token[:20]


async def test_service_info_names_the_drs_version(api):  # noqa: F811
    info = (await api.client.get(f"{DRS}/service-info")).json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"}
