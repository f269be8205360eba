"""POST /oauth/token answers anyone: a body over the form limit is refused without being read whole."""

from __future__ import annotations

from tests.graphql.conftest import api, seeded_settings  # noqa: F401  (the seeded in-process API)

from cellcommons.api.oauth import MAX_FORM_BYTES

FORM = {"content-type": "application/x-www-form-urlencoded"}
CHUNK = b"a" * 1024


async def test_a_streamed_body_over_the_limit_is_refused_without_reading_the_rest(api):  # noqa: F811
    sent = 0

    async def endless():
        nonlocal sent
        for _ in range(50_000):  # 50 MB if read to the end
            sent += 1
            yield CHUNK

    response = await api.client.post("/oauth/token", content=endless(), headers=FORM)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "the request body is too large"}
    assert sent <= MAX_FORM_BYTES // len(CHUNK) + 2


async def test_a_declared_length_over_the_limit_is_refused_at_once(api):  # noqa: F811
    response = await api.client.post("/oauth/token", content=b"a" * (MAX_FORM_BYTES + 1), headers=FORM)
    assert response.status_code == 400
    assert response.json()["error_description"] == "the request body is too large"


async def test_a_form_under_the_limit_is_still_read(api):  # noqa: F811
    response = await api.client.post("/oauth/token", content=b"grant_type=client_credentials", headers=FORM)
    assert response.status_code == 401  # read, and refused for want of client authentication
    assert response.json()["error"] == "invalid_client"
