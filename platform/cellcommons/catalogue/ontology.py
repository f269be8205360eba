"""The ontology subsets shipped with the project (DUO, MONDO, UBERON/CL), loaded once from `cellcommons/data`.

Terms are CURIEs. The MONDO subset is a DAG (several parents per class, no fixed depth): ancestry is walked,
never counted. The DUO matcher reuses this module.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib.resources import files
from types import MappingProxyType

MONDO_ROOT = "MONDO:0000001"
_RELEASE = re.compile(r"monarch-initiative/mondo@\w+ \((\d{4}-\d{2}) release\)")


class DuoKind(StrEnum):
    """The file's `kind` column: DOMAIN.md calls the permissions "primary" terms."""

    permission = "permission"
    modifier = "modifier"


@dataclass(frozen=True)
class DuoTerm:
    curie: str
    shorthand: str
    label: str
    kind: DuoKind
    parameter: str | None  # disease, region, months, date, project, institutions, users, research_type

    @property
    def is_primary(self) -> bool:
        return self.kind == DuoKind.permission


@dataclass(frozen=True)
class DiseaseClass:
    curie: str
    label: str
    parents: tuple[str, ...]  # direct is_a parents, all inside the subset


@dataclass(frozen=True)
class AnatomyTerm:
    """An UBERON tissue or a CL cell type; `prefix` is the MSC display prefix (BM, AT, UC, WJ) if it has one."""

    curie: str
    label: str
    prefix: str | None


class UnknownTerm(LookupError):
    pass


def _rows(name: str) -> list[dict[str, str]]:
    text = (files("cellcommons") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


@cache
def duo_terms() -> Mapping[str, DuoTerm]:
    return MappingProxyType(
        {
            row["id"]: DuoTerm(
                row["id"], row["shorthand"], row["label"], DuoKind(row["kind"]), row["parameter"] or None
            )
            for row in _rows("duo_terms.tsv")
        }
    )


@cache
def mondo_classes() -> Mapping[str, DiseaseClass]:
    classes = {
        row["id"]: DiseaseClass(row["id"], row["label"], tuple(filter(None, row["parents"].split(";"))))
        for row in _rows("mondo_subset.tsv")
    }
    # The file promises a closed hierarchy; a broken one would make DS matching silently wrong.
    for disease in classes.values():
        missing = [parent for parent in disease.parents if parent not in classes]
        if missing:
            raise ValueError(f"mondo_subset.tsv: parents {missing} of {disease.curie} are not in the file")
    return MappingProxyType(classes)


@cache
def mondo_release() -> str:
    """The MONDO release the subset was taken from (`2026-08`), as noted in the file's source column."""
    # Each row's source starts with the release it was taken from; later notes may cite older edge files.
    matches = [_RELEASE.match(row["source"]) for row in _rows("mondo_subset.tsv")]
    releases = {match.group(1) if match else "not noted" for match in matches}
    if len(releases) != 1:
        raise ValueError(f"mondo_subset.tsv names {len(releases)} MONDO releases: {sorted(releases)}")
    return releases.pop()


@cache
def anatomy_terms() -> Mapping[str, AnatomyTerm]:
    return MappingProxyType(
        {
            row["id"]: AnatomyTerm(row["id"], row["label"], row["prefix"] or None)
            for row in _rows("tissue_cell_terms.tsv")
        }
    )


def duo_term(curie: str) -> DuoTerm | None:
    return duo_terms().get(curie)


def duo_by_shorthand(shorthand: str) -> DuoTerm:
    for term in duo_terms().values():
        if term.shorthand == shorthand:
            return term
    raise UnknownTerm(f"no DUO term with shorthand {shorthand!r}")


def is_known_disease(curie: str) -> bool:
    return curie in mondo_classes()


@cache
def ancestors(curie: str) -> frozenset[str]:
    """Every class above `curie` in the is_a DAG (not `curie` itself)."""
    classes = mondo_classes()
    if curie not in classes:
        raise UnknownTerm(f"{curie} is not in the shipped MONDO subset (release {mondo_release()})")
    found: set[str] = set()
    stack = list(classes[curie].parents)
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(classes[parent].parents)
    return frozenset(found)


def is_descendant(curie: str, ancestor: str) -> bool:
    """Whether `curie` sits strictly below `ancestor` (lung cancer below cancer; a class is not its own)."""
    return ancestor in ancestors(curie)


def is_a(curie: str, ancestor: str) -> bool:
    """`curie` is `ancestor` or one of its descendants: the DS matching question."""
    return curie == ancestor or is_descendant(curie, ancestor)


def _anatomy(curie: str, prefix: str) -> AnatomyTerm | None:
    return anatomy_terms().get(curie) if curie.startswith(prefix) else None


def is_known_tissue(curie: str) -> bool:
    return _anatomy(curie, "UBERON:") is not None


def is_known_cell_type(curie: str) -> bool:
    return _anatomy(curie, "CL:") is not None


def tissue_prefix(uberon_curie: str) -> str | None:
    """The display prefix for an MSC from this tissue (`BM` for bone marrow); None when it has none or is unknown."""
    term = _anatomy(uberon_curie, "UBERON:")
    return term.prefix if term else None


@cache
def tissue_prefixes() -> frozenset[str]:
    return frozenset(term.prefix for term in anatomy_terms().values() if term.prefix)


def label(curie: str) -> str | None:
    """The label of any shipped term (DUO, MONDO, UBERON, CL); None when it is not shipped."""
    for vocabulary in (duo_terms(), mondo_classes(), anatomy_terms()):
        if curie in vocabulary:
            return vocabulary[curie].label
    return None
