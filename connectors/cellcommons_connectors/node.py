"""The `node` connector: follows another Cell Commons node's change feed (`changes(after:)` over GraphQL).

Partners run their own nodes; each is the origin of its own institutions' records. This connector reads a peer's
feed with a token from the peer's own token endpoint (client credentials of a machine client the peer
registered for the harvesting institution) and lands what the feed shows that client as read-only copies
naming the peer as their origin (see `cellcommons.sync.harvest`): specifications, batches with their QC
results, and datasets with their published versions. Tombstones delete the copies; a record the client may no
longer see (gone, or hidden since) counts as a tombstone too. The bookmark is the feed's cursor, committed with
each page; the feed's order is the order changes apply in.

Source configuration: `url` (the peer's base URL), `peer_node` (the peer's node id, which its records name as
their origin), optionally `token_url` (default `<url>/oauth/token`) and `page_size` (1-100, default 100).
Secrets: `client_id`, `client_secret`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from cellcommons.catalogue.schemas import (
    BatchIn,
    DatasetIn,
    DistributionIn,
    InstitutionIn,
    QcResultIn,
    SpecCriterionIn,
    SpecificationIn,
)
from cellcommons.errors import InvalidInput
from cellcommons.sync.harvest import HarvestedRecord
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
)
from cellcommons.sync.tokens import ClientCredentials

HARVESTED = ("Specification", "Batch", "Dataset")

# `specProductName`: a Batch's productName is non-null, a Specification's nullable; one selection cannot mix them.
FEED = """
fragment Spec on Specification {
  version specProductName: productName
  criteria { testType analyte timepoint operator limit allowed expected unit mandatory }
}
query Harvest($after: String, $first: Int!) {
  changes(after: $after, first: $first) {
    pageInfo { hasNextPage endCursor }
    edges { node {
      operation recordType recordId
      institution { slug name rorId country sector transferBasis }
      record {
        ... on Specification { ...Spec }
        ... on Batch {
          lotNumber productName cellType tissue manufacturedOn passage populationDoublings cultureSupplement
          totalCells concentration1e6PerMl volumeMl dmsoPercent storageTemperatureC expiresOn releaseStatus
          releasedOn clinicalTrialIds route maxInfusionMlPerKgH claimsIsct
          specification { id ...Spec }
          qcResults { testType analyte method timepoint status value unit qualitative passed testedOn }
        }
        ... on Dataset {
          accession doi
          versions {
            id version status publishedAt title description dataTypes cellType tissue donorCount
            personalDataLevel accessRights standards licence keywords claimsIsct
            conditions { term parameter }
            distributions { fileName mediaType sizeBytes sha256 columns }
            batches(first: 100) { nodes { id } }
          }
        }
      }
    } }
  }
}
"""


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


# The feed's GraphQL names back to the catalogue's (the records are checked as any catalogue input is).
_FIELDS = {f for schema in (InstitutionIn, SpecificationIn, SpecCriterionIn, BatchIn, QcResultIn, DatasetIn,
                            DistributionIn) for f in schema.model_fields}  # fmt: skip
SNAKE = {_camel(f): f for f in _FIELDS | {"published_at"}} | {"specProductName": "product_name"}
OPAQUE = {"parameter", "columns"}  # JSON values, kept as they are


def snake(value: Any) -> Any:
    if isinstance(value, list):
        return [snake(v) for v in value]
    if isinstance(value, dict):
        return {SNAKE.get(k, k): v if k in OPAQUE else snake(v) for k, v in value.items()}
    return value


class Changes(Stream):
    name = "changes"
    target = "node_record"
    natural_key = ("record_id",)
    schema = HarvestedRecord

    def __init__(self, connector: NodeFeed):
        self.connector = connector
        self.origin = connector.peer

    async def read_pages(self, bookmark: Bookmark) -> AsyncIterator[Page]:
        after = (bookmark or {}).get("after")
        while True:
            changes = await self.connector.feed(after)
            edges = changes.get("edges") or []
            records = [record for edge in edges if (record := _record(edge.get("node") or {})) is not None]
            info = changes.get("pageInfo") or {}
            cursor = info.get("endCursor") or after
            yield Page(records, {"after": cursor})
            if not edges or not info.get("hasNextPage"):
                return
            if cursor == after:  # asking again from the same place would answer the same page, forever
                raise SourceError("the peer's feed says more changes follow but gives no new cursor to read them from")
            after = cursor


def _record(change: dict[str, Any]) -> Record | None:
    """A change as a record of the harvest target; None for types a peer's copy never holds."""
    if change.get("recordType") not in HARVESTED:
        return None
    data = {"record_id": change.get("recordId"), "record_type": change.get("recordType"),
            "institution": snake(change.get("institution"))}  # fmt: skip
    record = snake(change.get("record"))
    if change.get("operation") == "delete" or record is None:
        return Record(data, deleted=True)
    if change["recordType"] == "Dataset":
        record = {**record, "versions": [_version(v) for v in record.get("versions") or []]}
    # No source timestamp: the feed's order is the order of the changes (several in one transaction share one).
    return Record(data | {"record": record})


def _version(version: dict[str, Any]) -> dict[str, Any]:
    batches = (version.get("batches") or {}).get("nodes") or []
    return {**version, "batches": [b.get("id") for b in batches]}


class NodeFeed(Connector):
    required_config = ("url", "peer_node")

    def __init__(self, context: ConnectorContext):
        super().__init__(context)
        config = context.config
        self.peer = str(config["peer_node"]).lower()
        if self.peer == context.settings.node_id:
            raise InvalidInput("peer_node is this node: a node never harvests itself", field="peer_node")
        self.url = str(config["url"]).rstrip("/")
        self.page_size = count_setting(config, "page_size", 100, most=100)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        secrets = context.secrets
        if not secrets.get("client_id") or not secrets.get("client_secret"):
            raise InvalidInput("the node connector needs the secrets client_id and client_secret", field="secrets")
        token_url = config.get("token_url") or f"{self.url}/oauth/token"
        self.tokens = ClientCredentials(self.http, token_url, secrets["client_id"], secrets["client_secret"])

    def streams(self) -> list[Stream]:
        return [Changes(self)]

    async def feed(self, after: str | None) -> dict[str, Any]:
        body = {"query": FEED, "variables": {"after": after, "first": self.page_size}}
        answer = decoded(await self.tokens.request("POST", f"{self.url}/graphql", json=body))
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            raise SourceError(f"the peer's feed refused the query: {errors[0].get('message', errors[0])}")
        changes = ((answer or {}).get("data") or {}).get("changes")
        if not isinstance(changes, dict):
            raise SourceError("the peer's answer has no change feed")
        return changes

    async def close(self) -> None:
        await self.http.aclose()
