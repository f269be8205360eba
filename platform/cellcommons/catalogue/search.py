"""Finding datasets and batches: typed filters (through relations too), full-text search, sort orders, facets.

Everything here builds SELECTs that carry the `access.visibility` rules, including the EXISTS subqueries that
filter through relations and every facet count, so neither a match nor a count can reveal a hidden row.

A dataset is judged by its latest version the caller may see (the one `latestVersion` shows). A filter is a
tree: each node's field conditions and `all_of` children must all hold, one of `any_of` must, `negated` must
not. Facets leave out their own condition only where it sits at the top of the tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    cast,
    exists,
    func,
    inspect,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
from sqlalchemy.types import String

from cellcommons.access import visibility
from cellcommons.auth.principal import Principal
from cellcommons.catalogue import ontology, search_index
from cellcommons.catalogue.enums import TestType, Timepoint
from cellcommons.catalogue.models import (
    Batch,
    Collection,
    Dataset,
    DatasetVersion,
    DataUseCondition,
    Institution,
    QcResult,
    batch_collection,
    dataset_version_batch,
)
from cellcommons.catalogue.reading import Ordering, SortKey, ordering_name
from cellcommons.errors import InvalidInput

MAX_VALUES = 100  # entries of an `in` / `anyOf` list
MAX_SEARCH = 200  # characters of a search text
MAX_DEPTH = 6  # nesting of and/or/not and relations
MAX_PARTS = 200  # fields and and/or/not entries of one filter, its relations' filters included
SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: no character of its own
# A decimal a filter compares with: finite, smaller than the widest decimal column holds (NUMERIC(18, 6)), with no
# more places than the finest one keeps; beyond these PostgreSQL refuses the value itself (an exponent of 1e9).
MAX_DECIMAL = Decimal(10) ** 12
DECIMAL_PLACES = 6
MIN_WIDTH, MAX_WIDTH = Decimal("0.000001"), Decimal(1000)  # of a histogram's buckets
DS = "DUO:0000007"  # disease-specific research: its parameter names the MONDO disease
HEADLINE = "MaxFragments=2, MaxWords=24, MinWords=8, StartSel=<mark>, StopSel=</mark>, FragmentDelimiter= … "

# The shipped UBERON/CL file has no structured hierarchy. Its notes state only that the tissue-specific MSC
# classes are mesenchymal stem cells (EquivalentTo CL:0000134 and part_of the tissue) and that the Wharton's
# jelly MSC is a subclass of the umbilical cord MSC; "with descendants" for cell types follows these links and
# for tissues is the term itself.
CELL_TYPE_PARENTS = {
    "CL:0002540": "CL:0000134",
    "CL:0002570": "CL:0000134",
    "CL:0002569": "CL:0000134",
    "CL:0002568": "CL:0002569",
}


# ---- the filter tree ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The conditions on one field; all given ones must hold. `path` names the field in errors."""

    path: str
    eq: Any = None
    in_: list | None = None
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    contains: str | None = None
    is_null: bool | None = None
    under: str | None = None  # an ontology term or any of its descendants
    any_of: list | None = None  # array fields: shares a value with the list
    all_of: list | None = None  # array fields: holds every value of the list


@dataclass(frozen=True)
class Marker:
    """Batches with an identity-marker result for `analyte` (CD73, HLA-DR…) whose value (%) meets `value`."""

    analyte: str
    value: Comparison
    path: str = "marker"


@dataclass(frozen=True)
class Filter:
    path: str
    fields: dict[str, Comparison | Marker | Filter] = field(default_factory=dict)
    all_of: list[Filter] = field(default_factory=list)
    any_of: list[Filter] = field(default_factory=list)
    negated: Filter | None = None

    def without(self, name: str) -> Filter:
        """This filter less one top-level field: what a facet of that field is computed under."""
        return Filter(self.path, {k: v for k, v in self.fields.items() if k != name}, self.all_of, self.any_of,
                      self.negated)  # fmt: skip


@dataclass(frozen=True)
class Query:
    """What a caller asks of a collection: filter, search text, sort."""

    filter: Filter | None = None
    search: str | None = None
    order: str = "created_at"
    descending: bool | None = None  # None: the order's natural direction (ascending; relevance: best first)


# ---- comparisons -------------------------------------------------------------------------------------------


def _terms_under(term: str, path: str, vocabulary: str) -> list[str]:
    if vocabulary == "MONDO":
        if not ontology.is_known_disease(term):
            raise InvalidInput(f"{term} is not in the shipped MONDO subset", field=path)
        return [c for c in ontology.mondo_classes() if ontology.is_a(c, term)]
    known = ontology.is_known_cell_type if vocabulary == "CL" else ontology.is_known_tissue
    if not known(term):
        raise InvalidInput(f"{term} is not a shipped {vocabulary} term", field=path)
    found, frontier = {term}, {term}
    while frontier:
        frontier = {child for child, parent in CELL_TYPE_PARENTS.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


# A comparison's operators and their names in the API, for errors.
OPERATORS = {"eq": "eq", "in_": "in", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte", "contains": "contains",
             "under": "under", "any_of": "anyOf", "all_of": "allOf"}  # fmt: skip


def checked(value: Any, field: str) -> Any:
    """`value` if PostgreSQL can take it as a parameter: it refuses a NUL character in text and a decimal beyond
    its numeric format, as errors of the statement rather than answers, and a lone surrogate (JSON may escape one)
    cannot even be encoded for it (every string or decimal a caller gives a search passes here). A moment without
    a UTC offset is refused too: PostgreSQL would read it in the session's time zone, which the caller neither
    chose nor sees."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput("text may not contain a NUL character", field=field)
        if SURROGATE.search(value):
            raise InvalidInput("text must be valid Unicode (a lone surrogate is not)", field=field)
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise InvalidInput("include a UTC offset (2026-01-01T00:00:00Z)", field=field)
    if isinstance(value, Decimal) and not (
        value.is_finite() and value.copy_abs() < MAX_DECIMAL and _places(value) <= DECIMAL_PLACES
    ):
        raise InvalidInput(f"give a number within ±10^12 with at most {DECIMAL_PLACES} decimal places", field=field)
    return value


def _places(value: Decimal) -> int:
    """The decimal places of a finite value, trailing zeros aside. From its digits: arithmetic (abs, normalize)
    rounds to the context, which overflows on a huge exponent and makes a tiny value 0."""
    _, digits, exponent = value.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    return max(0, -(exponent + len(digits) - len(significant))) if significant else 0


def _checked(c: Comparison) -> None:
    for attribute, name in OPERATORS.items():
        given = getattr(c, attribute)
        for value in given if isinstance(given, list) else (given,):
            checked(value, f"{c.path}.{name}")


def _values(values: list | None, path: str) -> list | None:
    if values is not None and not 1 <= len(values) <= MAX_VALUES:
        raise InvalidInput(f"give between 1 and {MAX_VALUES} values", field=path)
    return values


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def compare(column: ColumnElement, c: Comparison, vocabulary: str | None = None) -> ColumnElement[bool]:
    _checked(c)
    parts: list[ColumnElement[bool]] = []
    if c.eq is not None:
        parts.append(column == c.eq)
    if c.in_ is not None:
        parts.append(column.in_(_values(c.in_, f"{c.path}.in")))
    for bound, operator in ((c.gt, "__gt__"), (c.gte, "__ge__"), (c.lt, "__lt__"), (c.lte, "__le__")):
        if bound is not None:
            parts.append(getattr(column, operator)(bound))
    if c.contains is not None:
        if not 1 <= len(c.contains) <= MAX_SEARCH:
            raise InvalidInput(f"give 1 to {MAX_SEARCH} characters", field=f"{c.path}.contains")
        parts.append(column.ilike(_like(c.contains), escape="\\"))
    if c.is_null is not None:
        parts.append(column.is_(None) if c.is_null else column.is_not(None))
    if c.under is not None:
        if vocabulary is None:
            raise InvalidInput("this field is not an ontology term", field=f"{c.path}.under")
        parts.append(column.in_(_terms_under(c.under, f"{c.path}.under", vocabulary)))
    if c.any_of is not None:
        parts.append(column.overlap(cast(_values(c.any_of, f"{c.path}.anyOf"), ARRAY(String))))
    if c.all_of is not None:
        parts.append(column.contains(cast(_values(c.all_of, f"{c.path}.allOf"), ARRAY(String))))
    return and_(true(), *parts)


# ---- fields of each collection -----------------------------------------------------------------------------

# A field turns its Comparison (or nested Filter) into a condition on the row, given the principal.
FieldRule = Callable[[Principal | None, Any, Any], ColumnElement[bool]]


def _column(get: Callable[[Any], ColumnElement], vocabulary: str | None = None) -> FieldRule:
    return lambda principal, row, c: compare(get(row), c, vocabulary)


def _institution(get: Callable[[Any], ColumnElement]) -> FieldRule:
    def rule(principal, row, c):
        return get(row).in_(select(Institution.id).where(compare(Institution.slug, c)))

    return rule


def _qc_value(batch, kind: ColumnElement[bool], value: Comparison, qc) -> ColumnElement[bool]:
    # A batch's QC results are visible exactly when the batch is, and `batch` already passed the policy.
    return exists().where(qc.batch_id == batch.id, kind, compare(qc.value, value))


def _post_thaw_viability(principal, batch, value: Comparison) -> ColumnElement[bool]:
    qc = aliased(QcResult)
    return _qc_value(batch, and_(qc.test_type == TestType.viability, qc.timepoint == Timepoint.post_thaw), value, qc)


def _marker(principal, batch, marker: Marker) -> ColumnElement[bool]:
    qc = aliased(QcResult)
    analyte = checked(marker.analyte, f"{marker.path}.analyte")
    return _qc_value(batch, _marker_kind(qc, analyte), marker.value, qc)


def _marker_kind(qc, analyte: str) -> ColumnElement[bool]:
    return and_(qc.test_type == TestType.identity_marker, qc.analyte == analyte)


def _qc_results(principal, batch, node: Filter) -> ColumnElement[bool]:
    qc = aliased(QcResult)  # visible with `batch`, which already passed the policy
    return exists().where(qc.batch_id == batch.id, _condition(principal, qc, node, QC_FIELDS))


def _linked_batches(principal, version, node: Filter) -> ColumnElement[bool]:
    link, batch = dataset_version_batch.alias(), aliased(Batch)
    return exists().where(
        link.c.dataset_version_id == version.id,
        batch.id == link.c.batch_id,
        visibility.visible_batches(principal, batch),
        _condition(principal, batch, node, BATCH_FIELDS),
    )


def _linked_release_status(principal, version, c: Comparison) -> ColumnElement[bool]:
    link, batch = dataset_version_batch.alias(), aliased(Batch)
    return exists().where(
        link.c.dataset_version_id == version.id,
        batch.id == link.c.batch_id,
        visibility.visible_batches(principal, batch),
        compare(batch.release_status, c),
    )


def _condition_terms(principal, version, c: Comparison) -> ColumnElement[bool]:
    condition = aliased(DataUseCondition)  # conditions are seen with their version, which passed the policy
    return exists().where(condition.dataset_version_id == version.id, compare(condition.term, c))


def _disease(principal, version, c: Comparison) -> ColumnElement[bool]:
    condition = aliased(DataUseCondition)
    return exists().where(
        condition.dataset_version_id == version.id,
        condition.term == DS,
        compare(condition.parameter["disease"].astext, c, "MONDO"),
    )


QC_FIELDS: dict[str, FieldRule] = {
    "test_type": _column(lambda q: q.test_type),
    "analyte": _column(lambda q: q.analyte),
    "timepoint": _column(lambda q: q.timepoint),
    "status": _column(lambda q: q.status),
    "value": _column(lambda q: q.value),
    "unit": _column(lambda q: q.unit),
    "qualitative": _column(lambda q: q.qualitative),
    "passed": _column(lambda q: q.passed),
    "tested_on": _column(lambda q: q.tested_on),
}
BATCH_FIELDS: dict[str, FieldRule] = {
    "lot_number": _column(lambda b: b.lot_number),
    "product_name": _column(lambda b: b.product_name),
    "institution": _institution(lambda b: b.institution_id),
    "tissue": _column(lambda b: b.tissue, "UBERON"),
    "cell_type": _column(lambda b: b.cell_type, "CL"),
    "release_status": _column(lambda b: b.release_status),
    "culture_supplement": _column(lambda b: b.culture_supplement),
    "route": _column(lambda b: b.route),
    "passage": _column(lambda b: b.passage),
    "population_doublings": _column(lambda b: b.population_doublings),
    "manufactured_on": _column(lambda b: b.manufactured_on),
    "released_on": _column(lambda b: b.released_on),
    "expires_on": _column(lambda b: b.expires_on),
    "claims_isct": _column(lambda b: b.claims_isct),
    "clinical_trial_ids": _column(lambda b: b.clinical_trial_ids),
    "post_thaw_viability": _post_thaw_viability,
    "marker": _marker,
    "qc_results": _qc_results,
}
DATASET_FIELDS: dict[str, FieldRule] = {
    "accession": _column(lambda r: r.dataset.accession),
    "institution": _institution(lambda r: r.dataset.institution_id),
    "title": _column(lambda r: r.version.title),
    "description": _column(lambda r: r.version.description),
    "tissue": _column(lambda r: r.version.tissue, "UBERON"),
    "cell_type": _column(lambda r: r.version.cell_type, "CL"),
    "data_types": _column(lambda r: r.version.data_types),
    "keywords": _column(lambda r: r.version.keywords),
    "standards": _column(lambda r: r.version.standards),
    "access_rights": _column(lambda r: r.version.access_rights),
    "personal_data_level": _column(lambda r: r.version.personal_data_level),
    "donor_count": _column(lambda r: r.version.donor_count),
    "published_at": _column(lambda r: r.version.published_at),
    "claims_isct": _column(lambda r: r.version.claims_isct),
    "duo_term": lambda principal, row, c: _condition_terms(principal, row.version, c),
    "disease": lambda principal, row, c: _disease(principal, row.version, c),
    "batches": lambda principal, row, node: _linked_batches(principal, row.version, node),
    # The release status of the lots a dataset links to (only those the caller may see).
    "batch_release_status": lambda principal, row, c: _linked_release_status(principal, row.version, c),
}


@dataclass(frozen=True)
class DatasetRow:
    """A dataset with its latest visible version: what dataset filters and sort keys are written against."""

    dataset: Any
    version: Any

    @property
    def id(self):
        return self.dataset.id


def _parts(node: Filter) -> int:
    """How many fields and and/or/not entries `node` has, through relations too."""
    children = [*node.all_of, *node.any_of, *([node.negated] if node.negated is not None else [])]
    nested = [value for value in node.fields.values() if isinstance(value, Filter)]
    return len(node.fields) + len(children) + sum(map(_parts, children + nested))


def _condition(principal, row, node: Filter, fields: dict[str, FieldRule], depth: int = 0) -> ColumnElement[bool]:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"filters nest at most {MAX_DEPTH} levels deep", field=node.path)
    parts = [fields[name](principal, row, value) for name, value in node.fields.items()]
    parts += [_condition(principal, row, child, fields, depth + 1) for child in node.all_of]
    if node.any_of:
        parts.append(or_(*(_condition(principal, row, child, fields, depth + 1) for child in node.any_of)))
    if node.negated is not None:
        parts.append(not_(_condition(principal, row, node.negated, fields, depth + 1)))
    return and_(true(), *parts)


# ---- full-text search --------------------------------------------------------------------------------------


def _text_query(search: str) -> ColumnElement:
    """Stemmed English words or identifiers exactly as written: either reading of the text may match."""
    text = checked(search, "search").strip()
    if not 1 <= len(text) <= MAX_SEARCH:
        raise InvalidInput(f"give 1 to {MAX_SEARCH} characters", field="search")
    return func.websearch_to_tsquery("english", text).op("||")(func.websearch_to_tsquery("simple", text))


def _rank(document: ColumnElement, query: ColumnElement) -> ColumnElement:
    # float8, so the value sealed into a cursor compares equal to the one the database sorted by.
    return cast(func.ts_rank(document, query), Float(53))


def _din(search: str) -> str:
    return "".join(search.split()).upper()


def _matching(table, search: ColumnElement) -> Select:
    """Ids whose document matches, on an alias so the GIN index answers it (no correlation with the outer row)."""
    alias = table.alias()
    return select(alias.c.id).where(alias.c.search_document.op("@@")(search))


def _batch_search(principal, batch, search: str) -> tuple[ColumnElement[bool], ColumnElement]:
    query = _text_query(search)
    # Donation identification numbers live on collections, which only their institution's members may see.
    by_din = (
        select(batch_collection.c.batch_id)
        .join(Collection, Collection.id == batch_collection.c.collection_id)
        .where(Collection.din == _din(search), visibility.visible_collections(principal, Collection))
    )
    rank = _rank(search_index.batch_document, query)
    return or_(batch.id.in_(_matching(Batch.__table__, query)), batch.id.in_(by_din)), rank


def _dataset_search(row: DatasetRow, search: str) -> tuple[ColumnElement[bool], ColumnElement]:
    query = _text_query(search)
    # Matched on the joined rows themselves: an OR of two GIN subqueries (version, dataset) cannot drive the
    # join, and computing both sets in full costs more than testing the rows the ordering walks.
    version_document, dataset_document = search_index.dataset_version_document, search_index.dataset_document
    rank = _rank(version_document, query) + _rank(dataset_document, query)
    return or_(version_document.op("@@")(query), dataset_document.op("@@")(query)), rank


def dataset_headline(row: DatasetRow, search: str) -> ColumnElement:
    return func.ts_headline("english", row.version.description, _text_query(search), HEADLINE)


def batch_headline(batch, search: str) -> ColumnElement:
    return func.ts_headline("english", batch.product_name, _text_query(search), HEADLINE)


# ---- the collections ---------------------------------------------------------------------------------------


def _latest_visible(principal: Principal | None, row: DatasetRow) -> ColumnElement[bool]:
    newer = aliased(DatasetVersion)
    return and_(
        visibility.visible_dataset_versions(principal, row.version, row.dataset),
        ~exists().where(
            newer.dataset_id == row.dataset.id,
            newer.version > row.version.version,
            visibility.visible_dataset_versions(principal, newer, row.dataset),
        ),
    )


ROW = DatasetRow(Dataset, DatasetVersion)


@visibility.per_viewer
def _latest_versions(principal: Principal | None) -> Select:
    return (
        select(Dataset)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(_latest_visible(principal, ROW))
    )


def dataset_rows(principal: Principal | None) -> tuple[Select, DatasetRow]:
    """Visible datasets joined with their latest visible version, one row each.

    A dataset with a visible version is itself visible (`visible_datasets`), so the version's rule is the whole
    policy here; the custodian is read from the joined dataset, which lets the planner walk datasets in index
    order and probe each one's versions instead of materialising every visible version first."""
    return _latest_versions(principal), ROW


@visibility.per_viewer
def _visible_batches(principal: Principal | None) -> Select:
    return select(Batch).where(visibility.visible_batches(principal))


def _filtered(principal, query: Select, row, fields, request: Query) -> tuple[Select, ColumnElement | None]:
    if request.filter is not None:
        # Bounded like an `in` list: building and planning a statement grows with every part (25 000 took 10 s).
        if (parts := _parts(request.filter)) > MAX_PARTS:
            raise InvalidInput(
                f"a filter may have at most {MAX_PARTS} parts (fields and and/or/not entries); this one has {parts}",
                field=request.filter.path,
            )
        query = query.where(_condition(principal, row, request.filter, fields))
    rank = None
    if request.search is not None:
        matches, rank = (
            _dataset_search(row, request.search)
            if isinstance(row, DatasetRow)
            else _batch_search(principal, row, request.search)
        )
        query = query.where(matches)
    return query, rank


DATASET_ORDERS: dict[str, Callable[[DatasetRow], SortKey]] = {
    "created_at": lambda r: SortKey(r.dataset.created_at),
    "accession": lambda r: SortKey(r.dataset.accession),
    "title": lambda r: SortKey(r.version.title),
    "published_at": lambda r: SortKey(r.version.published_at, nullable=True),
    "donor_count": lambda r: SortKey(r.version.donor_count, nullable=True),
}
BATCH_ORDERS: dict[str, Callable[[Any], SortKey]] = {
    "created_at": lambda b: SortKey(b.created_at),
    "lot_number": lambda b: SortKey(b.lot_number),
    "manufactured_on": lambda b: SortKey(b.manufactured_on, nullable=True),
    "released_on": lambda b: SortKey(b.released_on, nullable=True),
    "expires_on": lambda b: SortKey(b.expires_on, nullable=True),
    "passage": lambda b: SortKey(b.passage, nullable=True),
}


def _ordering(orders: dict, row, model, request: Query, rank: ColumnElement | None) -> Ordering:
    relevance = request.order == "relevance"
    if relevance and rank is None:
        raise InvalidInput("sorting by relevance needs a search text", field="orderBy")
    descending = relevance if request.descending is None else request.descending
    key = SortKey(rank) if relevance else orders[request.order](row)
    name = ordering_name(model, f"{request.order}:{'desc' if descending else 'asc'}")
    return Ordering(name, (key,), model.id, descending)


@dataclass(frozen=True)
class Found:
    """A collection query ready to page: the SELECT (entity, headline, rank), its ordering, and the count.

    `unhighlighted` is the same SELECT with a NULL headline: what a page that shows no snippet reads (a snippet
    re-parses the row's description, the most expensive part of a page's statement)."""

    query: Select
    unhighlighted: Select
    ordering: Ordering
    count_query: Select
    request: Query  # what facets over the same set start from

    def params(self, values: dict[str, Any]) -> Found:
        """Each statement with `values` bound: how `visibility.per_viewer` binds the caller's institution."""
        return Found(
            self.query.params(values),
            self.unhighlighted.params(values),
            self.ordering,
            self.count_query.params(values),
            self.request,
        )


FOUND_KEPT = 256  # distinct requests per collection whose statements are kept (clients repeat a few queries)
# Characters of a request, as written, that may be kept with its statements (as the API keeps query texts): 256
# entries of a body's megabyte each would pin a quarter of a gigabyte per worker. A longer one is built per call.
KEPT_TEXT = 16_384


@dataclass(frozen=True, eq=False)
class Asked:
    """A request as a cache key: two are the same when written the same. Every value in a request is a string,
    number, date, enum, or a list or filter of them, so its repr says exactly what was asked."""

    request: Query
    text: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", repr(self.request))

    @property
    def kept(self) -> bool:
        """Whether statements built for this request may be kept (up to KEPT_TEXT characters)."""
        return len(self.text) <= KEPT_TEXT

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asked) and other.text == self.text


def find_datasets(principal: Principal | None, request: Query) -> Found:
    """The datasets `request` asks for; the statements are kept per distinct request and set of roles."""
    return _found(_found_datasets, principal, Asked(request))


def find_batches(principal: Principal | None, request: Query) -> Found:
    """The batches `request` asks for; the statements are kept per distinct request and set of roles."""
    return _found(_found_batches, principal, Asked(request))


def _found(kept: Callable[..., Found], principal: Principal | None, asked: Asked) -> Found:
    """From `kept` (a `per_viewer` cache), or for a long request built for this call alone (its undecorated
    builder, the caller's institution then written into the statements)."""
    return kept(principal, asked) if asked.kept else kept.__wrapped__(principal, asked)


@visibility.per_viewer(kept=FOUND_KEPT)
def _found_datasets(principal: Principal | None, asked: Asked) -> Found:
    request = asked.request
    base, row = dataset_rows(principal)
    query, rank = _filtered(principal, base, row, DATASET_FIELDS, request)
    ordering = _ordering(DATASET_ORDERS, row, Dataset, request, rank)
    hits = _with_hit(query, request, rank, lambda: dataset_headline(row, request.search))
    return Found(hits, _with_hit(query, request, rank), ordering, query, request)


@visibility.per_viewer(kept=FOUND_KEPT)
def _found_batches(principal: Principal | None, asked: Asked) -> Found:
    request = asked.request
    base = _visible_batches(principal)
    query, rank = _filtered(principal, base, Batch, BATCH_FIELDS, request)
    ordering = _ordering(BATCH_ORDERS, Batch, Batch, request, rank)
    hits = _with_hit(query, request, rank, lambda: batch_headline(Batch, request.search))
    return Found(hits, _with_hit(query, request, rank), ordering, query, request)


def _with_hit(query: Select, request: Query, rank, headline: Callable[[], ColumnElement] | None = None) -> Select:
    """With a search text each row also carries its highlighted snippet (unless `headline` is None) and rank."""
    if request.search is None:
        return query.add_columns(cast(null(), String).label("headline"), cast(null(), Float(53)).label("rank"))
    snippet = headline() if headline is not None else cast(null(), String)
    return query.add_columns(snippet.label("headline"), rank.label("rank"))


# ---- facets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacetCount:
    value: str
    count: int
    label: str | None = None


@dataclass(frozen=True)
class Bucket:
    lower: Decimal
    upper: Decimal
    count: int


def _without(request: Query, own: str) -> Query:
    return Query(request.filter.without(own) if request.filter else None, request.search)


def _dataset_set(principal, request: Query, own: str):
    base, row = dataset_rows(principal)
    query, _ = _filtered(principal, base, row, DATASET_FIELDS, _without(request, own))
    return query.with_only_columns(
        Dataset.id.label("dataset_id"),
        Dataset.institution_id,
        DatasetVersion.id.label("version_id"),
        DatasetVersion.tissue,
        DatasetVersion.cell_type,
        DatasetVersion.data_types,
        DatasetVersion.access_rights,
    ).subquery()


def _batch_set(principal, request: Query, own: str):
    base = _visible_batches(principal)
    query, _ = _filtered(principal, base, Batch, BATCH_FIELDS, _without(request, own))
    return query.with_only_columns(
        Batch.id, Batch.institution_id, Batch.tissue, Batch.cell_type, Batch.release_status, Batch.passage
    ).subquery()


def _tally(key: ColumnElement | None) -> ColumnElement:
    """How many distinct `key`s; None where the rows are the records themselves, one each (a plain count needs
    no sort per group: a third of a facet's time over the bench's 100 000 batches)."""
    return func.count(func.distinct(key)) if key is not None else func.count()


def _counts(value: ColumnElement, key: ColumnElement | None, source) -> Select:
    return (
        select(value.label("value"), _tally(key).label("count"))
        .select_from(source)
        .group_by(value)
        .order_by(_tally(key).desc(), value)
    )


def _institution_counts(rows, key: ColumnElement | None) -> Select:
    return (
        select(Institution.slug, _tally(key), Institution.name)
        .select_from(rows)
        .join(Institution, Institution.id == rows.c.institution_id)
        .group_by(Institution.slug, Institution.name)
        .order_by(_tally(key).desc(), Institution.slug)
    )


def dataset_facet(principal: Principal | None, request: Query, facet: str) -> Select:
    """One facet of the datasets `request` finds, computed without the filter's own top-level `facet` field."""
    rows = _dataset_set(principal, request, facet)  # one row per dataset: counted as they are unless joined
    match facet:
        case "institution":
            return _institution_counts(rows, None)
        case "duo_term":
            condition = DataUseCondition.__table__.alias()
            joined = rows.join(condition, condition.c.dataset_version_id == rows.c.version_id)
            return _counts(condition.c.term, rows.c.dataset_id, joined)
        case "batch_release_status":
            link, batch = dataset_version_batch.alias(), aliased(Batch)
            joined = rows.join(link, link.c.dataset_version_id == rows.c.version_id).join(
                inspect(batch).selectable,
                and_(batch.id == link.c.batch_id, visibility.visible_batches(principal, batch)),
            )
            return _counts(batch.release_status, rows.c.dataset_id, joined)
        case "data_types":
            data_type = func.unnest(rows.c.data_types).table_valued("value").render_derived()
            return _counts(data_type.c.value, rows.c.dataset_id, rows.join(data_type, true()))
        case _:
            return _counts(rows.c[facet], None, rows)


def batch_facet(principal: Principal | None, request: Query, facet: str) -> Select:
    rows = _batch_set(principal, request, facet)  # one row per batch
    if facet == "institution":
        return _institution_counts(rows, None)
    return _counts(rows.c[facet], None, rows)


def _bucketed(value: ColumnElement, width: Decimal) -> ColumnElement:
    return func.floor(value / width) * width


def batch_histogram(
    principal: Principal | None, request: Query, measure: str, width: Decimal, analyte: str | None = None
) -> Select:
    """Counts of batches by bucket of a measure: `passage`, `post_thaw_viability` or `marker` (one analyte)."""
    # Finite first (NaN does not compare); no finer than the values' scale, which the width is cast to (a finer
    # one rounds to 0 there).
    if not (width.is_finite() and MIN_WIDTH <= width <= MAX_WIDTH and _places(width) <= DECIMAL_PLACES):
        raise InvalidInput(
            f"the bucket width must be from {MIN_WIDTH} to {MAX_WIDTH}, with at most {DECIMAL_PLACES} decimal places",
            field="width",
        )
    if analyte is not None:
        checked(analyte, "analyte")
    rows = _batch_set(principal, request, measure)
    if measure == "passage":
        bucket = _bucketed(rows.c.passage, width)
        return _histogram(bucket, rows.c.id, rows, rows.c.passage.is_not(None))
    qc = QcResult.__table__.alias()
    kind = (
        and_(qc.c.test_type == TestType.viability, qc.c.timepoint == Timepoint.post_thaw)
        if measure == "post_thaw_viability"
        else _marker_kind(qc.c, analyte)
    )
    joined = rows.join(qc, and_(qc.c.batch_id == rows.c.id, kind, qc.c.value.is_not(None)))
    return _histogram(_bucketed(qc.c.value, width), rows.c.id, joined, true())


def _histogram(bucket: ColumnElement, key: ColumnElement, source, where: ColumnElement[bool]) -> Select:
    return (
        select(bucket.label("lower"), func.count(func.distinct(key)))
        .select_from(source)
        .where(where)
        .group_by(bucket)
        .order_by(bucket)
    )


async def facet_counts(session, query: Select, labelled: bool = False) -> list[FacetCount]:
    rows = (await session.execute(query)).all()
    if labelled:
        return [FacetCount(str(value), count, label) for value, count, label in rows]
    return [FacetCount(str(value), count, ontology.label(str(value))) for value, count in rows]


async def histogram(session, query: Select, width: Decimal) -> list[Bucket]:
    return [Bucket(Decimal(lower), Decimal(lower) + width, count) for lower, count in await session.execute(query)]
