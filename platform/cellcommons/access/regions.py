"""Regions the access rules name: the European Economic Area (GS conditions, the transfer gate).

EU member states plus Iceland, Liechtenstein and Norway (ISO 3166-1 alpha-2; Greece is `GR`, not `EL`).
"""

from __future__ import annotations

EEA = "EEA"

EEA_COUNTRIES: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT",
        "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO",
    }
)  # fmt: skip


def in_region(country: str, region: str) -> bool:
    """Whether a country (ISO 3166-1 alpha-2) lies in a region: itself, or `EEA`."""
    return country in EEA_COUNTRIES if region == EEA else country == region
