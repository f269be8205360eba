from alembic import context

import cellcommons.models  # noqa: F401  (registers every domain's tables on Base.metadata)
from cellcommons.db import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
