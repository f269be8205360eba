"""Imports every domain's ORM models so that Base.metadata is complete (migrations, tests)."""

import cellcommons.access.models
import cellcommons.audit.models
import cellcommons.catalogue.changes
import cellcommons.catalogue.idempotency
import cellcommons.catalogue.models
import cellcommons.catalogue.search_index
import cellcommons.exports.models
import cellcommons.institutions.models
import cellcommons.portal.models
import cellcommons.storage.models
import cellcommons.sync.models  # noqa: F401
