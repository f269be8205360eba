"""The GraphQL schema: queries over the catalogue, every one through the policy."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.tools import merge_types

from cellcommons.catalogue import models, reading
from cellcommons.catalogue import search as finding
from cellcommons.errors import InvalidInput
from cellcommons.graphql import compiled
from cellcommons.graphql.access import AccessMutation, AccessQuery
from cellcommons.graphql.changes import ChangesQuery
from cellcommons.graphql.connection import (
    NODES,
    Connection,
    nodes_select,
    page_request,
    selected_arguments,
    selects,
    sql_connection,
)
from cellcommons.graphql.execution import PlainFieldsExecution, call_resolvers_directly
from cellcommons.graphql.exports import ExportsMutation, ExportsQuery
from cellcommons.graphql.files import FilesMutation
from cellcommons.graphql.mutations import CatalogueMutation
from cellcommons.graphql.search import (
    BatchFilter,
    BatchOrder,
    BatchSearchConnection,
    DatasetFilter,
    DatasetOrder,
    DatasetSearchConnection,
    TermFilter,
    found_connection,
    to_query,
)
from cellcommons.graphql.sync import SyncQuery
from cellcommons.graphql.types import (
    Batch,
    Dataset,
    DatasetVersion,
    Distribution,
    Donor,
    Institution,
    Node,
    QcResult,
    Specification,
    as_node,
)

MAX_NODES = 100


async def _node(info: strawberry.Info, global_id: str, field: str) -> Node | None:
    type_name, key = info.context.ids.parse_global_id(global_id, field)
    model = reading.NODE_MODELS.get(type_name)
    if model is None:
        return None  # same answer as a row that is hidden or gone
    row = await info.context.row(model, key)
    return as_node(info, type_name, row) if row else None


PAGE_ARGUMENTS = ("first", "after", "last", "before")


async def _preload_latest_batches(info: strawberry.Info, versions: list[DatasetVersion]) -> None:
    """The page of batches (and their QC results) of a page of datasets' latest versions, when every place in
    the query asks for the same page: each version's `batches` is then answered without a task of its own."""
    places = [(*nodes, "latestVersion", "batches") for nodes in NODES]
    asked = [arguments for place in places for arguments in selected_arguments(info, place)]
    if not versions or not asked or any(arguments != asked[0] for arguments in asked):
        return
    with_qc = any(selects(info, (*place, *nodes, "qcResults")) for place in places for nodes in NODES)
    page = {name: asked[0].get(name) for name in PAGE_ARGUMENTS}
    for size in ("first", "last"):  # Strawberry hands literals over as written; variables come coerced
        if isinstance(page[size], str):
            page[size] = int(page[size])
    await DatasetVersion.preload_batches(info, versions, page, with_qc)


@strawberry.type(description="Who is asking, as the platform sees them.")
class Viewer:
    signed_in: bool
    institution: str | None
    subject: str | None
    roles: list[str]


SEARCH = (
    "Full-text search: English words (stemmed: 'studies' finds 'study'), quoted phrases, OR, -word; identifiers "
    "such as lot numbers, accessions and trial ids as written. Sort by RELEVANCE for the best match first."
)


@strawberry.type
class CatalogueQuery:
    @strawberry.field(description="Any object by its global id; null when it does not exist or is hidden.")
    async def node(self, info: strawberry.Info, id: strawberry.ID) -> Node | None:
        return await _node(info, id, "id")

    @strawberry.field(description="Objects by global id, in the order asked; null for missing or hidden ones.")
    async def nodes(self, info: strawberry.Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > MAX_NODES:
            raise InvalidInput(f"at most {MAX_NODES} ids per request", field="ids")
        return [await _node(info, value, f"ids[{i}]") for i, value in enumerate(ids)]

    @strawberry.field
    def viewer(self, info: strawberry.Info) -> Viewer:
        principal = info.context.principal
        if principal is None:
            return Viewer(signed_in=False, institution=None, subject=None, roles=[])
        return Viewer(
            signed_in=True,
            institution=principal.institution_slug,
            subject=principal.subject,
            roles=sorted(principal.roles),
        )

    @strawberry.field(description="Partner institutions.")
    async def institutions(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Institution]:
        request = page_request(info.context.ids, first, after, last, before)
        query = reading.institutions_query(info.context.principal)
        return await sql_connection(info.context, query, models.Institution, request, Institution.of)

    @strawberry.field(description="MSC datasets the caller may see, filtered, searched and sorted, with facets.")
    async def datasets(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: DatasetFilter | None = None,
        search: Annotated[str | None, strawberry.argument(description=SEARCH)] = None,
        order_by: DatasetOrder | None = None,
    ) -> DatasetSearchConnection:
        request = page_request(info.context.ids, first, after, last, before)
        query = to_query(filter, search, order_by)
        answered = await compiled.dataset_page(info, request, query)
        if answered is not None:
            return answered  # the whole answer from one statement (graphql.compiled), completed already
        found = finding.find_datasets(info.context.principal, query)
        node_id = info.context.settings.node_id
        kind = DatasetSearchConnection
        if not nodes_select(info, "latestVersion"):
            return await found_connection(info, found, request, lambda r: Dataset.of(r, node_id), kind)

        # The page's rows are joined with their latest visible version already: read it with them.
        def to_node(row, version):
            return Dataset.of(row, node_id).with_latest(version)

        page = await found_connection(info, found, request, to_node, kind, (models.DatasetVersion,))
        await _preload_latest_batches(info, [edge.node.latest for edge in page.edges if edge.node.latest])
        return page

    @strawberry.field(description="Batches (lots) the caller may see, filtered, searched and sorted, with facets.")
    async def batches(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: BatchFilter | None = None,
        search: Annotated[str | None, strawberry.argument(description=SEARCH)] = None,
        order_by: BatchOrder | None = None,
        tissue: Annotated[
            str | None, strawberry.argument(description="UBERON CURIE", deprecation_reason="use filter.tissue")
        ] = None,
    ) -> BatchSearchConnection:
        request = page_request(info.context.ids, first, after, last, before)
        if tissue is not None:
            filter = BatchFilter(and_=[filter] if filter else None, tissue=TermFilter(eq=tissue))
        found = finding.find_batches(info.context.principal, to_query(filter, search, order_by))
        node_id = info.context.settings.node_id
        return await found_connection(info, found, request, lambda r: Batch.of(r, node_id), BatchSearchConnection)


# Each domain contributes its root fields in a module of its own; they are merged into Query and Mutation.
QUERIES: list[type] = [CatalogueQuery, ChangesQuery, SyncQuery, AccessQuery, ExportsQuery]
MUTATIONS: list[type] = [FilesMutation, CatalogueMutation, AccessMutation, ExportsMutation]


def build_schema(extensions: list | None = None, *, fast_paths: bool = True) -> strawberry.Schema:
    """The API's schema; `fast_paths=False` executes it as Strawberry and graphql-core alone would (the tests'
    reference for `graphql.execution`)."""
    schema = strawberry.Schema(
        query=merge_types("Query", tuple(QUERIES)),
        mutation=merge_types("Mutation", tuple(MUTATIONS)) if MUTATIONS else None,
        types=[Institution, Dataset, DatasetVersion, Batch, Specification, QcResult, Distribution, Donor],
        extensions=extensions or [],
        execution_context_class=PlainFieldsExecution if fast_paths else None,
    )
    return call_resolvers_directly(schema) if fast_paths else schema


def schema_sdl() -> str:
    return build_schema().as_str() + "\n"
