"""Audit log tables (to be written)."""
