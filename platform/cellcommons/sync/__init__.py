"""Scheduled sync: the connector SDK, the runtime that lands records in the catalogue, and the scheduler."""
