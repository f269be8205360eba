"""Dataset changes recorded before other institutions saw only the publishes: mark each publish shared.

Since this revision the change feed shows another institution a dataset's change only when it is `shared`, that
is when it published a version they may see (a public or restricted one); draft saves and non_public versions stay
with the owner's members. Changes logged before carry `shared = false`, so without this a node harvesting the feed
from its start would never learn of datasets published until now. Each published, not non_public version's
publish is the dataset's last change at or before its `published_at` (the change is stamped with the publishing
transaction's start, `published_at` within it): that change is marked shared, nothing else.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SHARE_PUBLISHES = """
UPDATE catalogue_change AS change SET shared = true
FROM (
    SELECT DISTINCT ON (version.id) logged.seq
    FROM dataset_version AS version
    JOIN catalogue_change AS logged
      ON logged.record_type = 'Dataset' AND logged.record_id = version.dataset_id
     AND logged.operation <> 'delete' AND logged.changed_at <= version.published_at
    WHERE version.status = 'published' AND version.access_rights <> 'non_public'
    ORDER BY version.id, logged.seq DESC
) AS publish
WHERE change.seq = publish.seq
"""


def upgrade() -> None:
    op.execute(SHARE_PUBLISHES)


def downgrade() -> None:
    pass  # the flags are right under both revisions' code: an older node simply does not read them for datasets
