"""GraphQL inputs and results for finding data: filters, sort orders, search hits with snippets, facets.

The inputs only carry what the client asked; `catalogue.search` turns them into SQL with the policy inside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.utils.str_converters import to_camel_case

from cellcommons.catalogue import reading, search
from cellcommons.graphql.connection import PageInfo, SealedCursor, page_info, selects
from cellcommons.graphql.types import (
    AccessRights,
    Batch,
    CultureSupplement,
    Dataset,
    PersonalDataLevel,
    QcTestType,
    QualitativeResult,
    ReleaseStatus,
    ResultStatus,
    Route,
    Timepoint,
)

E = TypeVar("E")
NodeT = TypeVar("NodeT")


# ---- field conditions --------------------------------------------------------------------------------------


def _in():
    return strawberry.field(name="in", default=None, description="one of these values (at most 100)")


@strawberry.input(description="Conditions on a text field; all given ones must hold.")
class StringFilter:
    eq: str | None = None
    in_: list[str] | None = _in()
    contains: str | None = strawberry.field(default=None, description="case-insensitive substring")
    is_null: bool | None = None


@strawberry.input(description="Conditions on an ontology term (CURIE); `under` matches the term or a descendant.")
class TermFilter:
    eq: str | None = None
    in_: list[str] | None = _in()
    under: str | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a whole number.")
class IntFilter:
    eq: int | None = None
    in_: list[int] | None = _in()
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a decimal value (in the field's unit).")
class DecimalFilter:
    eq: Decimal | None = None
    gt: Decimal | None = None
    gte: Decimal | None = None
    lt: Decimal | None = None
    lte: Decimal | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a date.")
class DateFilter:
    eq: date | None = None
    gt: date | None = None
    gte: date | None = None
    lt: date | None = None
    lte: date | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a point in time.")
class DateTimeFilter:
    gt: datetime | None = None
    gte: datetime | None = None
    lt: datetime | None = None
    lte: datetime | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a yes/no field.")
class BooleanFilter:
    eq: bool | None = None
    is_null: bool | None = None


@strawberry.input(description="Conditions on a list of values (data types, keywords, trial ids).")
class TagFilter:
    any_of: list[str] | None = strawberry.field(default=None, description="holds at least one of these")
    all_of: list[str] | None = strawberry.field(default=None, description="holds every one of these")


@strawberry.input(description="Conditions on a closed vocabulary.")
class EnumFilter(Generic[E]):
    eq: E | None = None
    in_: list[E] | None = _in()


@strawberry.input(description="Batches with an identity-marker result for `analyte` whose value (%) meets `value`.")
class MarkerFilter:
    analyte: str
    value: DecimalFilter


# ---- collection filters ------------------------------------------------------------------------------------


@strawberry.input(description="Conditions on one QC result; all given ones must hold for the same result.")
class QcResultFilter:
    and_: list[QcResultFilter] | None = strawberry.field(name="and", default=None)
    or_: list[QcResultFilter] | None = strawberry.field(name="or", default=None)
    not_: QcResultFilter | None = strawberry.field(name="not", default=None)
    test_type: EnumFilter[QcTestType] | None = None
    analyte: StringFilter | None = None
    timepoint: EnumFilter[Timepoint] | None = None
    status: EnumFilter[ResultStatus] | None = None
    value: DecimalFilter | None = None
    unit: StringFilter | None = None
    qualitative: EnumFilter[QualitativeResult] | None = None
    passed: BooleanFilter | None = None
    tested_on: DateFilter | None = None


@strawberry.input(description="Conditions on batches; fields combine with AND, or use `and`/`or`/`not`.")
class BatchFilter:
    and_: list[BatchFilter] | None = strawberry.field(name="and", default=None)
    or_: list[BatchFilter] | None = strawberry.field(name="or", default=None)
    not_: BatchFilter | None = strawberry.field(name="not", default=None)
    lot_number: StringFilter | None = None
    product_name: StringFilter | None = None
    institution: StringFilter | None = strawberry.field(default=None, description="the manufacturer's slug")
    tissue: TermFilter | None = strawberry.field(default=None, description="UBERON tissue source")
    cell_type: TermFilter | None = strawberry.field(default=None, description="Cell Ontology cell type")
    release_status: EnumFilter[ReleaseStatus] | None = None
    culture_supplement: EnumFilter[CultureSupplement] | None = None
    route: EnumFilter[Route] | None = None
    passage: IntFilter | None = None
    population_doublings: DecimalFilter | None = None
    manufactured_on: DateFilter | None = None
    released_on: DateFilter | None = None
    expires_on: DateFilter | None = None
    claims_isct: BooleanFilter | None = None
    clinical_trial_ids: TagFilter | None = None
    post_thaw_viability: DecimalFilter | None = strawberry.field(
        default=None, description="some post-thaw viability result (%) meets this"
    )
    marker: MarkerFilter | None = None
    qc_results: QcResultFilter | None = strawberry.field(default=None, description="some QC result meets this")


@strawberry.input(description="Conditions on datasets, judged on their latest version the caller may see.")
class DatasetFilter:
    and_: list[DatasetFilter] | None = strawberry.field(name="and", default=None)
    or_: list[DatasetFilter] | None = strawberry.field(name="or", default=None)
    not_: DatasetFilter | None = strawberry.field(name="not", default=None)
    accession: StringFilter | None = None
    institution: StringFilter | None = strawberry.field(default=None, description="the custodian's slug")
    title: StringFilter | None = None
    description: StringFilter | None = None
    tissue: TermFilter | None = strawberry.field(default=None, description="UBERON tissue source")
    cell_type: TermFilter | None = strawberry.field(default=None, description="Cell Ontology cell type")
    data_types: TagFilter | None = None
    keywords: TagFilter | None = None
    standards: TagFilter | None = None
    access_rights: EnumFilter[AccessRights] | None = None
    personal_data_level: EnumFilter[PersonalDataLevel] | None = None
    donor_count: IntFilter | None = None
    published_at: DateTimeFilter | None = None
    claims_isct: BooleanFilter | None = None
    duo_term: StringFilter | None = strawberry.field(default=None, description="a data-use condition's DUO CURIE")
    disease: TermFilter | None = strawberry.field(
        default=None, description="the MONDO disease of a disease-specific (DS) condition"
    )
    batches: BatchFilter | None = strawberry.field(default=None, description="some linked batch meets this")


COMBINATORS = {"and_", "or_", "not_"}
NESTED = (QcResultFilter, BatchFilter, DatasetFilter)


def _path(parent: str, name: str) -> str:
    return f"{parent}.{to_camel_case(name.rstrip('_'))}"


def _comparison(value: Any, path: str) -> search.Comparison:
    given = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return search.Comparison(path=path, **{k: v for k, v in given.items() if v is not None})


def to_filter(value: Any, path: str = "filter") -> search.Filter:
    """The client's filter input as the catalogue's filter tree, each part named by its path for errors."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        given = getattr(value, f.name)
        if given is None or f.name in COMBINATORS:
            continue
        where = _path(path, f.name)
        if isinstance(given, NESTED):
            fields[f.name] = to_filter(given, where)
        elif isinstance(given, MarkerFilter):
            fields[f.name] = search.Marker(given.analyte, _comparison(given.value, f"{where}.value"), where)
        else:
            fields[f.name] = _comparison(given, where)
    return search.Filter(
        path,
        fields,
        all_of=[to_filter(v, f"{path}.and[{i}]") for i, v in enumerate(value.and_ or [])],
        any_of=[to_filter(v, f"{path}.or[{i}]") for i, v in enumerate(value.or_ or [])],
        negated=to_filter(value.not_, f"{path}.not") if value.not_ is not None else None,
    )


# ---- sort orders -------------------------------------------------------------------------------------------


@strawberry.enum(description="ASC: smallest or earliest first; DESC: the reverse. Missing values sort last.")
class SortDirection(Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.enum(description="RELEVANCE needs a search text and puts the best match first.")
class DatasetOrderField(Enum):
    CREATED_AT = "created_at"
    ACCESSION = "accession"
    TITLE = "title"
    PUBLISHED_AT = "published_at"
    DONOR_COUNT = "donor_count"
    RELEVANCE = "relevance"


@strawberry.enum(description="RELEVANCE needs a search text and puts the best match first.")
class BatchOrderField(Enum):
    CREATED_AT = "created_at"
    LOT_NUMBER = "lot_number"
    MANUFACTURED_ON = "manufactured_on"
    RELEASED_ON = "released_on"
    EXPIRES_ON = "expires_on"
    PASSAGE = "passage"
    RELEVANCE = "relevance"


@strawberry.input
class DatasetOrder:
    field: DatasetOrderField
    direction: SortDirection | None = strawberry.field(default=None, description="default ASC; RELEVANCE: DESC")


@strawberry.input
class BatchOrder:
    field: BatchOrderField
    direction: SortDirection | None = strawberry.field(default=None, description="default ASC; RELEVANCE: DESC")


def to_query(filter: Any, text: str | None, order: DatasetOrder | BatchOrder | None) -> search.Query:
    direction = order.direction if order else None
    return search.Query(
        filter=to_filter(filter) if filter is not None else None,
        search=text,
        order=order.field.value if order else "created_at",
        descending=None if direction is None else direction is SortDirection.DESC,
    )


# ---- results -----------------------------------------------------------------------------------------------


@strawberry.type(description="How many records of the filtered set carry this value.")
class FacetValue:
    value: str
    label: str | None = strawberry.field(description="the term's or institution's name, where known")
    count: int


@strawberry.type(description="How many records have a value in [from, to).")
class HistogramBucket:
    from_: Decimal = strawberry.field(name="from")
    to: Decimal
    count: int


def _values(rows: list[search.FacetCount]) -> list[FacetValue]:
    return [FacetValue(value=r.value, label=r.label, count=r.count) for r in rows]


def _buckets(rows: list[search.Bucket]) -> list[HistogramBucket]:
    return [HistogramBucket(from_=b.lower, to=b.upper, count=b.count) for b in rows]


@strawberry.type(
    description="Counts over the datasets the connection finds; each facet ignores the filter's own top-level "
    "field, so choosing one value still shows the others."
)
class DatasetFacets:
    query: strawberry.Private[search.Query]

    async def _counts(self, info: strawberry.Info, facet: str, *, labelled: bool = False) -> list[FacetValue]:
        select = search.dataset_facet(info.context.principal, self.query, facet)
        return _values(await info.context.read(search.facet_counts, select, labelled))

    @strawberry.field(description="by custodian institution (slug, name)")
    async def institution(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "institution", labelled=True)

    @strawberry.field(description="by UBERON tissue source")
    async def tissue(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "tissue")

    @strawberry.field(description="by Cell Ontology cell type")
    async def cell_type(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "cell_type")

    @strawberry.field(description="by DUO term of the data-use conditions")
    async def duo_term(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "duo_term")

    @strawberry.field(description="by data type")
    async def data_type(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "data_types")

    @strawberry.field(description="by access rights")
    async def access_rights(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "access_rights")


@strawberry.type(
    description="Counts over the batches the connection finds; each facet ignores the filter's own top-level "
    "field. Histograms count batches per bucket of width `width`."
)
class BatchFacets:
    query: strawberry.Private[search.Query]

    async def _counts(self, info: strawberry.Info, facet: str, *, labelled: bool = False) -> list[FacetValue]:
        select = search.batch_facet(info.context.principal, self.query, facet)
        return _values(await info.context.read(search.facet_counts, select, labelled))

    async def _histogram(self, info, measure: str, width: Decimal, analyte: str | None = None):
        select = search.batch_histogram(info.context.principal, self.query, measure, width, analyte)
        return _buckets(await info.context.read(search.histogram, select, width))

    @strawberry.field(description="by manufacturer (slug, name)")
    async def institution(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "institution", labelled=True)

    @strawberry.field(description="by UBERON tissue source")
    async def tissue(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "tissue")

    @strawberry.field(description="by Cell Ontology cell type")
    async def cell_type(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "cell_type")

    @strawberry.field(description="by release status")
    async def release_status(self, info: strawberry.Info) -> list[FacetValue]:
        return await self._counts(info, "release_status")

    @strawberry.field(description="post-thaw viability [%]; ignores the `postThawViability` filter")
    async def post_thaw_viability(self, info: strawberry.Info, width: Decimal = Decimal(5)) -> list[HistogramBucket]:
        return await self._histogram(info, "post_thaw_viability", width)

    @strawberry.field(description="one identity marker's positive cells [%]; ignores the `marker` filter")
    async def marker_positivity(
        self, info: strawberry.Info, analyte: str, width: Decimal = Decimal(5)
    ) -> list[HistogramBucket]:
        return await self._histogram(info, "marker", width, analyte)

    @strawberry.field(description="passage number; ignores the `passage` filter")
    async def passage(self, info: strawberry.Info, width: Decimal = Decimal(1)) -> list[HistogramBucket]:
        return await self._histogram(info, "passage", width)


@strawberry.type(description="An edge of a search: with a search text, also the rank and a highlighted snippet.")
class Hit(SealedCursor, Generic[NodeT]):
    node: NodeT
    rank: float | None = strawberry.field(description="full-text relevance; null without a search text")
    highlight: str | None = strawberry.field(
        description="the best passages, matches wrapped in <mark>; null without a search text"
    )


@strawberry.type
class SearchConnection(Generic[NodeT]):
    edges: list[Hit[NodeT]]
    page_info: PageInfo
    _total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many nodes match, for this caller.")
    async def total_count(self) -> int:
        return await self._total()

    @strawberry.field(description="The nodes of this page, without cursors.")
    def nodes(self) -> list[NodeT]:
        return [edge.node for edge in self.edges]


@strawberry.type(description="Datasets found by filter and search, with facets over all of them.")
class DatasetSearchConnection(SearchConnection[Dataset]):
    query: strawberry.Private[search.Query]

    @strawberry.field
    def facets(self) -> DatasetFacets:
        return DatasetFacets(query=self.query)


@strawberry.type(description="Batches found by filter and search, with facets over all of them.")
class BatchSearchConnection(SearchConnection[Batch]):
    query: strawberry.Private[search.Query]

    @strawberry.field
    def facets(self) -> BatchFacets:
        return BatchFacets(query=self.query)


PAGE_PARTS = ("edges", "nodes", "pageInfo")  # what of a connection needs its page's rows


async def found_connection(
    info: strawberry.Info, found: search.Found, request: reading.PageRequest, to_node, kind: type, also: tuple = ()
) -> Any:
    """One statement for the page (rows, ranks, sort keys, snippets if the edges show them, and `also`: columns or
    entities of the rows' own join that the nodes are made with), none when only the count or facets are asked;
    those only when asked."""
    context = info.context
    if any(selects(info, (part,)) for part in PAGE_PARTS):
        query = found.query if selects(info, ("edges", "highlight")) else found.unhighlighted
        page = await context.read(reading.keyset_page, query.add_columns(*also), found.ordering, request)
    else:
        reading.checked_cursors(found.ordering, request)
        page = reading.Page([], [], has_next=False, has_previous=False)
    edges = [
        Hit(position=c, seal=context.ids.cursor, sealed=None, node=to_node(entity, *more), rank=rank,
            highlight=headline)
        for (entity, headline, rank, *more), c in zip(page.rows, page.cursors, strict=True)
    ]  # fmt: skip

    async def total() -> int:
        return await context.read(reading.count, found.count_query)

    return kind(edges=edges, page_info=page_info(edges, page.has_next, page.has_previous), _total=total,
                query=found.request)  # fmt: skip
