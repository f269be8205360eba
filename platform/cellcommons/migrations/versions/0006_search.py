"""Search: stored tsvector documents (English stemming + `simple` identifiers) with GIN indexes, and the indexes
filters, facets and sort keys use.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cellcommons.catalogue.search_index import (
    BATCH_DOCUMENT,
    DATASET_DOCUMENT,
    DATASET_VERSION_DOCUMENT,
    WORDS_FUNCTION,
)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DOCUMENTS = {"dataset_version": DATASET_VERSION_DOCUMENT, "batch": BATCH_DOCUMENT, "dataset": DATASET_DOCUMENT}
PLAIN_INDEXES = {
    "ix_batch_tissue": ("batch", ["tissue"]),
    "ix_batch_cell_type": ("batch", ["cell_type"]),
    "ix_batch_release_status": ("batch", ["release_status"]),
    "ix_batch_created_at_id": ("batch", ["created_at", "id"]),
    "ix_batch_lot_number_id": ("batch", ["lot_number", "id"]),
    "ix_batch_manufactured_on_id": ("batch", ["manufactured_on", "id"]),
    "ix_dataset_created_at_id": ("dataset", ["created_at", "id"]),
    "ix_qc_result_measure": ("qc_result", ["test_type", "analyte", "timepoint", "value", "batch_id"]),
}


def upgrade() -> None:
    op.execute(
        f"CREATE FUNCTION {WORDS_FUNCTION}(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        "RETURN array_to_string($1, ' ')"
    )
    for table, expression in DOCUMENTS.items():
        op.add_column(
            table,
            sa.Column("search_document", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=True),
        )
        op.create_index(f"ix_{table}_search_document", table, ["search_document"], postgresql_using="gin")
    for name, (table, columns) in PLAIN_INDEXES.items():
        op.create_index(name, table, columns)
    op.create_index("ix_dataset_version_data_types", "dataset_version", ["data_types"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_dataset_version_data_types", "dataset_version")
    for name, (table, _columns) in PLAIN_INDEXES.items():
        op.drop_index(name, table)
    for table in DOCUMENTS:
        op.drop_index(f"ix_{table}_search_document", table)
        op.drop_column(table, "search_document")
    op.execute(f"DROP FUNCTION {WORDS_FUNCTION}(text[])")
