"""A seeded database of this module's own, the API app running in-process, and tokens from the dev issuers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import event
from tests.auth.conftest import register_demo_issuers

from cellcommons.api.app import create_app
from cellcommons.db import Database
from cellcommons.demo.consortium import SCALES, Consortium
from cellcommons.demo.seed import seed_through_service


@dataclass
class Api:
    client: httpx.AsyncClient
    idp: object
    settings: object
    statements: Counter

    def token(self, slug: str, user: str = "alice") -> dict:
        return {"Authorization": f"Bearer {self.idp.issue_access_token(slug, user)}"}

    async def query(self, query: str, variables: dict | None = None, headers: dict | None = None) -> dict:
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
async def seeded_settings(stack, dev_idp):
    settings = stack.new_database()
    database = Database(settings)
    async with httpx.AsyncClient(timeout=5) as http, database.unit_of_work() as session:
        await register_demo_issuers(session, http, dev_idp)
        await seed_through_service(session, Consortium(SCALES["tiny"], seed=14), origin=settings.node_id)
    await database.dispose()
    yield settings
    stack.drop(settings)


@pytest.fixture(scope="module")
async def api(seeded_settings, dev_idp):
    app = create_app(seeded_settings)
    async with app.router.lifespan_context(app):
        statements: Counter = Counter()
        engine = app.state.resources.database.engine.sync_engine

        @event.listens_for(engine, "before_cursor_execute")
        def count(conn, cursor, statement, parameters, context, executemany):
            statements["all"] += 1

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:
            yield Api(client=client, idp=dev_idp, settings=seeded_settings, statements=statements)
