"""Imports every domain's ORM models so that Base.metadata is complete (migrations, tests)."""

import cellcommons.access.models
import cellcommons.audit.models
import cellcommons.catalogue.models
import cellcommons.institutions.models  # noqa: F401
