"""Imports every domain's ORM models so that Base.metadata is complete (migrations, tests)."""
