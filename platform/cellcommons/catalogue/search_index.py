"""What full-text search reads: a stored tsvector per searchable table, and the indexes filters and facets use.

Each document combines English stemming (titles, descriptions, keywords, product names: "studies" finds
"study") with the `simple` configuration for identifiers that must match as written (lot numbers, accessions,
trial ids). The documents are generated columns, so every writer (the service, COPY, sync) keeps them current
and ranking reads a stored value instead of re-parsing text for every match. They are appended to the tables
here rather than mapped on the ORM classes, so loading a batch or dataset never drags its tsvector along.
"""

from __future__ import annotations

from sqlalchemy import Column, Computed, Index
from sqlalchemy.dialects.postgresql import TSVECTOR

from cellcommons.catalogue.models import Batch, Dataset, DatasetVersion, QcResult

# array_to_string is only STABLE (element output functions could depend on settings), so a generated column
# cannot call it; for text[] the result never changes, which this IMMUTABLE wrapper (created by 0006) states.
WORDS_FUNCTION = "cellcommons_words"


def _english(expression: str, weight: str) -> str:
    return f"setweight(to_tsvector('english'::regconfig, coalesce({expression}, '')), '{weight}')"


def _simple(expression: str) -> str:
    return f"to_tsvector('simple'::regconfig, coalesce({expression}, ''))"


def _words(column: str) -> str:
    return f"{WORDS_FUNCTION}({column})"


DATASET_VERSION_DOCUMENT = " || ".join(
    [
        _english("title", "A"),
        _english(_words("keywords"), "B"),
        _english(_words("data_types"), "B"),
        _english("description", "C"),
        _simple(_words("clinical_trial_ids")),
    ]
)
BATCH_DOCUMENT = " || ".join(
    [_english("product_name", "A"), _simple("lot_number"), _simple(_words("clinical_trial_ids"))]
)
DATASET_DOCUMENT = _simple("(accession::text || ' ' || coalesce(doi, ''))")


def _document(table, expression: str) -> Column:
    column = Column("search_document", TSVECTOR, Computed(expression, persisted=True), nullable=True)
    table.append_column(column)
    return column


dataset_version_document = _document(DatasetVersion.__table__, DATASET_VERSION_DOCUMENT)
batch_document = _document(Batch.__table__, BATCH_DOCUMENT)
dataset_document = _document(Dataset.__table__, DATASET_DOCUMENT)

INDEXES = [
    Index("ix_dataset_version_search_document", dataset_version_document, postgresql_using="gin"),
    Index("ix_batch_search_document", batch_document, postgresql_using="gin"),
    Index("ix_dataset_search_document", dataset_document, postgresql_using="gin"),
    # Filters and facets over batches (100 000 at bench scale) and the sort keys with their tie-breaker.
    Index("ix_batch_tissue", Batch.tissue),
    Index("ix_batch_cell_type", Batch.cell_type),
    Index("ix_batch_release_status", Batch.release_status),
    Index("ix_batch_created_at_id", Batch.created_at, Batch.id),
    Index("ix_batch_lot_number_id", Batch.lot_number, Batch.id),
    Index("ix_batch_manufactured_on_id", Batch.manufactured_on, Batch.id),
    Index("ix_dataset_created_at_id", Dataset.created_at, Dataset.id),
    Index("ix_dataset_version_data_types", DatasetVersion.data_types, postgresql_using="gin"),
    # QC filters ("post-thaw viability ≥ 80") and histograms read (test, analyte, timepoint, value) per batch.
    Index(
        "ix_qc_result_measure",
        QcResult.test_type,
        QcResult.analyte,
        QcResult.timepoint,
        QcResult.value,
        QcResult.batch_id,
    ),
]
