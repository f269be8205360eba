"""Catalogue tables (to be written)."""
