"""The `castor` connector: batch records kept as participants of a Castor EDC study.

Castor's API takes an OAuth 2 client-credentials token from `POST /oauth/token` (client id and secret in the
form; the answer has `access_token` and `expires_in`), renewed when it expires or is refused (401). The study's
values come from its export endpoints, which answer `;`-separated CSV: `GET /api/study/{id}/export/structure`
names each field's variable (`Field ID` → `Field Variable Name`), `GET /api/study/{id}/export/data` holds one
row per value (`Participant ID`, `Form Type`, `Field ID`, `Value`); the study-form values of a participant make
its record, by variable name, for the mapping. The participants themselves come from
`GET /api/study/{id}/participant`, HAL JSON pages (`_embedded.participants`, `_links.next.href`, `page`,
`page_count`, `total_items`), each with `participant_id`, `updated_on` and `archived`.

Every run is a full pass: each participant page is one commit (its bookmark the next page, so a crash resumes
there); an archived participant is a tombstone, and a participant gone from the study is deleted once a pass
completes without it (the runtime's snapshot rule). Records whose content did not change write nothing. Pages
are numbered, so a participant added or removed mid-pass shifts the later ones by a place: one would go unseen,
and be deleted. When the study's `total_items` changes during a pass (a resumed pass included), the pass reads
the participants again from page 1 (up to RESTARTS times); those seen before stay seen, so a removal takes
effect a pass later rather than a live participant going. Next links are followed only on Castor's own host (the
token goes with them) and only forward; `updated_on` may come as Castor's date object (`date`, `timezone`).

Source configuration: `url` (e.g. https://data.castoredc.com), `study_id`, `mapping` (see
`cellcommons_connectors.mapping`). Secrets: `client_id`, `client_secret`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from cellcommons.catalogue.schemas import BatchIn
from cellcommons.errors import InvalidInput
from cellcommons.sync.sdk import (
    Bookmark,
    Connector,
    ConnectorContext,
    Page,
    Record,
    SourceError,
    Stream,
    decoded,
)
from cellcommons.sync.tokens import ClientCredentials
from cellcommons_connectors.mapping import load_mapping

HAL = {"Accept": "application/hal+json"}
RESTARTS = 3  # passes begun again from page 1 because the study changed under them, before the run gives up


class Participants(Stream):
    name = "participants"
    target = "batch"
    natural_key = ("lot_number",)
    schema = BatchIn
    full_snapshot = True

    def __init__(self, connector: Castor):
        self.connector = connector

    async def read_pages(self, bookmark: Bookmark) -> AsyncIterator[Page]:
        values = await self.connector.study_values()
        start, total = int((bookmark or {}).get("page", 1)), (bookmark or {}).get("total")
        for _ in range(RESTARTS + 1):
            try:
                async for page in self._pass(values, start, total):
                    yield page
                return
            except StudyChanged:  # read it again from the first page
                start, total = 1, None
        raise SourceError(f"the study's participants kept changing during {RESTARTS + 1} passes; read again later")

    async def _pass(self, values: dict[str, dict[str, str]], start: int, total: int | None) -> AsyncIterator[Page]:
        """The participant pages from `start` on, while the study keeps `total` participants (any at first)."""
        castor = self.connector
        url, last = castor.api(f"participant?page={start}"), start - 1
        while url:
            body = await castor.hal(url)
            page, participants = body.get("page"), (body.get("_embedded") or {}).get("participants")
            if not isinstance(participants, list) or not isinstance(page, int):
                raise SourceError(f"{url}: not a HAL page of participants")
            if page <= last:
                raise SourceError(f"{url}: the participant pages lead back from page {last} to page {page}")
            if total is not None and body.get("total_items") != total:
                raise StudyChanged
            total, last = body.get("total_items"), page
            records = [castor.record(p, values) for p in participants if isinstance(p, dict)]
            url = castor.next_page(body, url)
            yield Page([r for r in records if r is not None], {"page": page + 1, "total": total} if url else None)


class StudyChanged(Exception):
    """The study's participant count changed during a pass: its page numbers no longer hold."""


class Castor(Connector):
    required_config = ("url", "study_id", "mapping")

    def __init__(self, context: ConnectorContext):
        super().__init__(context)
        config, secrets = context.config, context.secrets
        self.url = str(config["url"]).rstrip("/")
        self.study = str(config["study_id"])
        self.mapping = load_mapping(config["mapping"])
        if not secrets.get("client_id") or not secrets.get("client_secret"):
            raise InvalidInput("the castor connector needs the secrets client_id and client_secret", field="secrets")
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))
        self.tokens = ClientCredentials(self.http, f"{self.url}/oauth/token", secrets["client_id"],
                                        secrets["client_secret"], method="post")  # fmt: skip

    def streams(self) -> list[Stream]:
        return [Participants(self)]

    def api(self, path: str) -> str:
        return f"{self.url}/api/study/{self.study}/{path}"

    def next_page(self, body: dict[str, Any], url: str) -> str | None:
        """The page after this one: on Castor's own host only, as the study's token goes with the request."""
        following = (body.get("_links") or {}).get("next")
        if following is None:
            return None
        if not isinstance(following, dict) or not isinstance(following.get("href"), str):
            raise SourceError(f"{url}: _links.next is not a link with an href")
        target = urljoin(self.url, following["href"])
        if urlsplit(target)[:2] != urlsplit(self.url)[:2]:
            raise SourceError(f"{url}: _links.next leads to another host ({urlsplit(target).netloc}); not followed")
        return target

    async def hal(self, url: str) -> dict[str, Any]:
        body = decoded(await self.tokens.request("GET", urljoin(self.url, url), headers=HAL))
        if not isinstance(body, dict):
            raise SourceError(f"{url}: not a HAL object")
        return body

    async def export(self, what: str, columns: set[str]) -> list[dict[str, str]]:
        response = await self.tokens.request("GET", self.api(f"export/{what}"))
        if response.status_code >= 400:
            decoded(response)  # raises, with Castor's message
        rows = list(csv.DictReader(io.StringIO(response.text), delimiter=";"))
        if rows and not columns <= set(rows[0]):
            raise SourceError(
                f"the study's {what} export lacks the column(s) {', '.join(sorted(columns - set(rows[0])))}"
            )
        return rows

    async def study_values(self) -> dict[str, dict[str, str]]:
        """Each participant's study-form values by variable name."""
        names = {r["Field ID"]: r["Field Variable Name"]
                 for r in await self.export("structure", {"Field ID", "Field Variable Name"})}  # fmt: skip
        values: dict[str, dict[str, str]] = {}
        for row in await self.export("data", {"Participant ID", "Form Type", "Field ID", "Value"}):
            if row["Form Type"] == "Study" and row["Field ID"] in names:
                values.setdefault(row["Participant ID"], {})[names[row["Field ID"]]] = row["Value"]
        missing = sorted(self.mapping.needed() - set(names.values()))
        if missing:
            raise SourceError(f"the Castor study has no variable(s) {', '.join(missing)} that the mapping names")
        return values

    def record(self, participant: dict[str, Any], values: dict[str, dict[str, str]]) -> Record | None:
        """A participant's record; None for one without study values yet (nothing to catalogue)."""
        raw = values.get(str(participant.get("participant_id")))
        if not raw:
            return None
        record = self.mapping.record(raw, castor_time(participant.get("updated_on")), "updated_on")
        return replace(record, deleted=record.deleted or bool(participant.get("archived")))

    async def close(self) -> None:
        await self.http.aclose()


def castor_time(value: object) -> object:
    """Castor's time as ISO 8601 text where it comes as its date object (`{"date": "2026-11-20 09:30:00.000000",
    "timezone_type": 3, "timezone": "Europe/Amsterdam"}`: a zone name, or with type 1 an offset); anything else
    as it is, for the mapping to read or to report unreadable."""
    if not isinstance(value, dict) or not isinstance(value.get("date"), str):
        return value
    try:
        moment = datetime.fromisoformat(value["date"])
        zone = value.get("timezone")
        if value.get("timezone_type") == 3 and isinstance(zone, str):
            return moment.replace(tzinfo=ZoneInfo(zone)).isoformat()
        if value.get("timezone_type") == 1 and isinstance(zone, str):
            return datetime.fromisoformat(f"{value['date']}{zone}").isoformat()
    except (ValueError, ZoneInfoNotFoundError):
        pass
    return f"{value['date']} ({value.get('timezone')})"  # unreadable: the finding shows what came
