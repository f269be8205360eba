"""The `redcap` connector: batch records kept in a REDCap project, read through the REDCap API.

Every call is a form-encoded `POST` to the project's API URL with the project's token: `content=metadata`
(the data dictionary: the mapping's fields must be in it, and the project's record ID field must map to
`lot_number`, since deletions name records by it), `content=record` (`format=json`, `type=flat`: one flat
object per record, every value a string), and `content=log` with `logtype=record_delete` for deletions.

Incremental: the bookmark is the time the previous complete read started at; the next read asks for records
changed since (`dateRangeBegin`) and for the deletions logged since (`beginTime`), both an overlap earlier
(configuration `overlap_minutes`, default 10). The time is this machine's: the REDCap API has no call answering
the server's time, and REDCap stamps changes with its own clock, so a server clock behind ours would hide the
changes made just after a read started; the overlap covers that skew (and the log, which keeps minutes only).
REDCap reads those times in the server's own time zone (configuration `timezone`, default UTC). Records read
twice change nothing (the sync ledger skips identical content). Deletions come from the log rather than from
comparing snapshots because a snapshot means exporting the whole project at every run; the log needs the token's
user to hold the Logging right as well as API Export. A record deleted and created again in one window keeps
the new one: tombstones land first.

Source configuration: `url` (the API URL, e.g. https://redcap.example.org/api/), `mapping` (see
`cellcommons_connectors.mapping`), optionally `timezone`, `overlap_minutes` (at least 1) and `page_size` (records
per commit, default 500).
Secret: `token`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
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
    count_setting,
    decoded,
    send,
)
from cellcommons_connectors.mapping import load_mapping

OVERLAP_MINUTES = 10  # a REDCap server's clock may be this far behind ours without a change going unread
REDCAP_TIME = "%Y-%m-%d %H:%M:%S"


class Records(Stream):
    name = "records"
    target = "batch"
    natural_key = ("lot_number",)
    schema = BatchIn

    def __init__(self, connector: Redcap):
        self.connector = connector

    async def read_pages(self, bookmark: Bookmark) -> AsyncIterator[Page]:
        redcap = self.connector
        since = redcap.overlapping((bookmark or {}).get("since"))
        started = datetime.now(redcap.zone).strftime(REDCAP_TIME)
        await redcap.check_dictionary()
        records = [Record({"lot_number": lot}, updated_at=at, deleted=True) for lot, at in await redcap.deleted(since)]
        records += [redcap.mapping.record(row) for row in await redcap.records(since)]
        size = redcap.page_size
        for start in range(0, max(len(records), 1), size):
            last = start + size >= len(records)
            yield Page(records[start : start + size], {"since": started if last else since})


class Redcap(Connector):
    required_config = ("url", "mapping")

    def __init__(self, context: ConnectorContext):
        super().__init__(context)
        config = context.config
        self.url = str(config["url"])
        self.mapping = load_mapping(config["mapping"])
        try:
            self.zone = ZoneInfo(str(config.get("timezone", "UTC")))
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"{config.get('timezone')!r} is not a time zone", field="timezone") from None
        self.page_size = count_setting(config, "page_size", 500)
        self.overlap = timedelta(minutes=count_setting(config, "overlap_minutes", OVERLAP_MINUTES))
        self.token = context.secrets.get("token")
        if not self.token:
            raise InvalidInput("the redcap connector needs the secret token", field="secrets")
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))

    def streams(self) -> list[Stream]:
        return [Records(self)]

    async def call(self, content: str, **params: str) -> list[dict[str, Any]]:
        form = {"token": self.token, "content": content, "format": "json", "returnFormat": "json", **params}
        answer = decoded(await send(self.http, "POST", self.url, data=form))
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise SourceError(f"REDCap's {content} export is not a list of objects")
        return answer

    async def check_dictionary(self) -> None:
        fields = [item.get("field_name") for item in await self.call("metadata")]
        if not fields:
            raise SourceError("the REDCap project has no fields")
        missing = sorted(self.mapping.needed() - set(fields))
        if missing:
            raise SourceError(f"the REDCap project has no field(s) {', '.join(missing)} that the mapping names")
        if self.mapping.columns.get(fields[0]) != "lot_number":
            raise InvalidInput(f"the mapping must map the project's record ID field {fields[0]!r} to lot_number",
                               field="mapping.columns")  # fmt: skip

    def overlapping(self, since: object) -> str | None:
        """The time to read changes from: the bookmark's, an overlap earlier (None: read everything)."""
        if since is None:
            return None
        try:
            start = datetime.strptime(str(since), REDCAP_TIME)
        except ValueError:
            raise InvalidInput(f"the bookmark {since!r} is not a REDCap time", field="bookmark") from None
        return (start - self.overlap).strftime(REDCAP_TIME)

    async def records(self, since: str | None) -> list[dict[str, Any]]:
        return await self.call("record", type="flat", **({"dateRangeBegin": since} if since else {}))

    async def deleted(self, since: str | None) -> list[tuple[str, datetime | None]]:
        """(record, when) for each deletion logged since; nothing on a first read (nothing is held yet)."""
        if since is None:
            return []
        entries = await self.call("log", logtype="record_delete", beginTime=since[:16])
        return [(str(e["record"]), self._when(e.get("timestamp"))) for e in entries if e.get("record")]

    def _when(self, stamp: object) -> datetime | None:
        try:
            return datetime.fromisoformat(str(stamp)).replace(tzinfo=self.zone).astimezone(UTC)
        except ValueError:
            return None

    async def close(self) -> None:
        await self.http.aclose()
