"""The application role: it reads and writes rows, never changes the schema.

Revision ID: 0001
Revises:
"""

from alembic import op

from cellcommons.migrations import app_role

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = app_role()
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    # Every table the owner creates from here on: rows only. Tables that must stay append-only
    # (the audit log) revoke UPDATE and DELETE in their own migration.
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "{role}"')


def downgrade() -> None:
    role = app_role()
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM "{role}"')
    op.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM "{role}"'
    )
    op.execute(f'REVOKE USAGE ON SCHEMA public FROM "{role}"')
