"""File transfers (issue 10): the audit append as one server-side call, multipart uploads, expired uploads.

`audit_append` locks the chain head, takes the time, hashes and inserts the event and moves the head in one
round trip. The canonical JSON stays defined in Python (`audit.service`): the caller sends it in three pieces
around the two values only known under the lock (occurred_at and seq), and the function hashes
prev_hash ‖ piece₁ ‖ occurred_at ‖ piece₂ ‖ seq ‖ piece₃ exactly as `event_hash` does, so `audit verify` checks
these events unchanged. It runs with its caller's rights (SECURITY INVOKER): the application role's INSERT on
`audit_event` and UPDATE on the head, nothing more.

Revision ID: 0014
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

AUDIT_APPEND = """
CREATE FUNCTION audit_append(
    p_actor text, p_institution text, p_action text, p_target text, p_outcome text, p_details jsonb,
    p_before_time text, p_before_seq text, p_after_seq text
) RETURNS TABLE (event_id bigint, event_at timestamptz, event_prev_hash text, event_hash text)
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    SELECT h.seq + 1, h.hash INTO event_id, event_prev_hash FROM audit_chain_head h WHERE h.id = 1 FOR UPDATE;
    -- Taken under the lock, so occurred_at follows the chain's order.
    event_at := clock_timestamp();
    event_hash := encode(sha256(convert_to(
        event_prev_hash || p_before_time || to_char(event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || p_before_seq || event_id::text || p_after_seq, 'UTF8')), 'hex');
    INSERT INTO audit_event (id, occurred_at, actor, institution, action, target, outcome, details, prev_hash, hash)
    VALUES (event_id, event_at, p_actor, p_institution, p_action, p_target, p_outcome, p_details,
            event_prev_hash, event_hash);
    UPDATE audit_chain_head SET seq = event_id, hash = event_hash WHERE id = 1;
    RETURN NEXT;
END
$$
"""


def upgrade() -> None:
    op.execute(AUDIT_APPEND)
    # An upload that was never completed and was cleaned away, or that its submitter abandoned.
    op.execute("ALTER TYPE upload_status ADD VALUE IF NOT EXISTS 'expired'")
    op.execute("ALTER TYPE upload_status ADD VALUE IF NOT EXISTS 'aborted'")
    # A multipart upload's S3 UploadId and part size; NULL for a single presigned PUT.
    op.add_column("file_upload", sa.Column("multipart_id", sa.String(length=1024), nullable=True))
    op.add_column("file_upload", sa.Column("part_size", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_file_upload_multipart_has_part_size"), "file_upload", "(multipart_id IS NULL) = (part_size IS NULL)"
    )
    op.create_index(
        op.f("ix_file_upload_pending_url_expires_at"),
        "file_upload",
        ["url_expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_file_upload_pending_url_expires_at"), table_name="file_upload")
    op.drop_constraint(op.f("ck_file_upload_multipart_has_part_size"), "file_upload", type_="check")
    op.drop_column("file_upload", "part_size")
    op.drop_column("file_upload", "multipart_id")
    # PostgreSQL cannot drop enum values: 'expired' and 'aborted' stay, unused.
    op.execute("DROP FUNCTION audit_append(text, text, text, text, text, jsonb, text, text, text)")
