"""The DUO matcher (GA4GH DUO, as DOMAIN.md describes it): a request's purpose against a dataset's conditions.

The verdict is `compatible`, `needs_review` with the obligations a person must judge, or `incompatible` with
the reasons. Primary terms judge the purpose; modifiers about the requester judge the requester's institution
record (sector, country, slug/ROR) and the person, never what the purpose claims. US names a person as
`<institution slug>:<subject>` or by ORCID; an ORCID the requester merely typed in makes it needs review.

A purpose names one primary term (GRU, HMB, DS with a MONDO disease, POA: NRES is no purpose) and optionally
GSO (a genetic study) and CC (clinical care); methods development and commercial use are declared as flags,
since DUO has terms only for their prohibition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cellcommons.access.regions import in_region
from cellcommons.catalogue import ontology
from cellcommons.catalogue.enums import Sector

PURPOSE_PRIMARY = frozenset({"GRU", "HMB", "DS", "POA"})
PURPOSE_EXTRA = frozenset({"GSO", "CC"})


class Compatibility(StrEnum):
    compatible = "compatible"
    needs_review = "needs_review"
    incompatible = "incompatible"


@dataclass(frozen=True)
class Purpose:
    primary: str  # shorthand: GRU, HMB, DS or POA
    disease: str | None = None  # MONDO, for DS
    extras: frozenset[str] = frozenset()  # GSO, CC
    methods_development: bool = False
    commercial_use: bool = False


@dataclass(frozen=True)
class Requester:
    subject: str
    institution_slug: str
    country: str  # ISO 3166-1 alpha-2
    sector: Sector
    ror_id: str | None = None
    orcid: str | None = None
    orcid_verified: bool = False  # the ORCID came from the identity token, not from the request form

    @property
    def qualified_subject(self) -> str:
        """How a US condition names a person: subjects are unique per issuer only, so a bare `lea` could be anyone
        at any institution; `<institution slug>:<subject>` is one person (slugs hold no colon)."""
        return f"{self.institution_slug}:{self.subject}"


@dataclass(frozen=True)
class Condition:
    term: str  # DUO CURIE
    parameter: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shorthand(self) -> str:
        term = ontology.duo_term(self.term)
        return term.shorthand if term else self.term


@dataclass(frozen=True)
class Note:
    term: str
    shorthand: str
    message: str


@dataclass(frozen=True)
class Verdict:
    compatibility: Compatibility
    reasons: tuple[Note, ...] = ()
    obligations: tuple[Note, ...] = ()

    def as_json(self) -> dict[str, Any]:
        notes = lambda items: [vars(n) for n in items]  # noqa: E731
        return {
            "compatibility": self.compatibility.value,
            "reasons": notes(self.reasons),
            "obligations": notes(self.obligations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            Compatibility(data["compatibility"]),
            tuple(Note(**n) for n in data["reasons"]),
            tuple(Note(**n) for n in data["obligations"]),
        )


def _note(condition: Condition, message: str) -> Note:
    return Note(condition.term, condition.shorthand, message)


# ---- primary terms: does the purpose fall within what the dataset permits? ---------------------------------

_PERMITS: dict[str, frozenset[str]] = {
    "NRES": PURPOSE_PRIMARY,
    "GRU": PURPOSE_PRIMARY,  # any research purpose
    "HMB": frozenset({"HMB", "DS"}),  # health/medical/biomedical, not ancestry; DS is a kind of HMB
    "POA": frozenset({"POA"}),
}


def _primary_reasons(primaries: list[Condition], purpose: Purpose) -> list[Note]:
    """Every distinct primary must permit the purpose (the strictest holds); several DS conditions are
    alternatives: the requested disease must be one of them or below one."""
    reasons = []
    diseases = [c for c in primaries if c.shorthand == "DS"]
    for condition in {c.shorthand: c for c in primaries if c.shorthand != "DS"}.values():
        if purpose.primary not in _PERMITS[condition.shorthand]:
            message = f"{condition.shorthand} data does not permit a {purpose.primary} purpose"
            reasons.append(_note(condition, message))
    if diseases and not _disease_matches(diseases, purpose):
        allowed = ", ".join(sorted({str(c.parameter.get("disease")) for c in diseases}))
        requested = purpose.disease if purpose.primary == "DS" else f"a {purpose.primary} purpose"
        message = f"DS data is limited to research on {allowed} or a more specific disease; requested: {requested}"
        reasons.append(_note(diseases[0], message))
    return reasons


def _disease_matches(diseases: list[Condition], purpose: Purpose) -> bool:
    if purpose.primary != "DS" or not purpose.disease or not ontology.is_known_disease(purpose.disease):
        return False
    return any(
        ontology.is_known_disease(d) and ontology.is_a(purpose.disease, d)
        for d in (str(c.parameter.get("disease")) for c in diseases)
    )


# ---- modifiers -------------------------------------------------------------------------------------------

HardRule = Callable[[Condition, Purpose, Requester], str | None]  # the reason when the condition is broken

_NOT_FOR_PROFIT = {Sector.public, Sector.non_profit}


def _npoa(c: Condition, p: Purpose, r: Requester) -> str | None:
    return "ancestry research is prohibited" if p.primary == "POA" else None


def _nmds(c: Condition, p: Purpose, r: Requester) -> str | None:
    return "methods development is prohibited" if p.methods_development else None


def _gso(c: Condition, p: Purpose, r: Requester) -> str | None:
    return None if "GSO" in p.extras else "only genetic studies are permitted (the purpose does not state GSO)"


def _npu(c: Condition, p: Purpose, r: Requester) -> str | None:
    if r.sector in _NOT_FOR_PROFIT:
        return None
    return f"only not-for-profit organisations; {r.institution_slug} is {r.sector.value}"


def _ncu(c: Condition, p: Purpose, r: Requester) -> str | None:
    return "only non-commercial use; the request declares commercial use" if p.commercial_use else None


def _npuncu(c: Condition, p: Purpose, r: Requester) -> str | None:
    return _npu(c, p, r) or _ncu(c, p, r)


def _gs(c: Condition, p: Purpose, r: Requester) -> str | None:
    regions = list(c.parameter.get("regions") or [])
    if any(in_region(r.country, region) for region in regions):
        return None
    return f"use is limited to {', '.join(regions)}; {r.institution_slug} is in {r.country}"


def _named_users(c: Condition) -> set[str]:
    return {u.strip() for u in c.parameter.get("users") or []}


def _us(c: Condition, p: Purpose, r: Requester) -> str | None:
    users = _named_users(c)
    if r.qualified_subject in users or (r.orcid and r.orcid in users):
        return None
    return f"use is limited to named users; {r.qualified_subject} is not one"


def _us_unconfirmed(c: Condition, r: Requester) -> str | None:
    """A US condition met only by an ORCID the requester typed in (no identity token vouched for it): a steward
    must confirm the person before approving."""
    if r.qualified_subject in _named_users(c) or r.orcid_verified:
        return None
    return f"the requester states the ORCID {r.orcid} of a named user; confirm that {r.qualified_subject} holds it"


def _is(c: Condition, p: Purpose, r: Requester) -> str | None:
    named = set(c.parameter.get("institutions") or [])
    if {_institution_key(n) for n in named} & {_institution_key(k) for k in (r.institution_slug, r.ror_id) if k}:
        return None
    return f"use is limited to {', '.join(sorted(named))}; {r.institution_slug} is not one"


_ROR_URL = re.compile(r"^(?:https?://)?(?:www\.)?ror\.org/")


def _institution_key(name: str) -> str:
    """A slug, or a ROR id in any of its written forms (`05xvt9f17`, `https://ror.org/05xvt9f17`) as the bare id
    the institution record stores."""
    return _ROR_URL.sub("", name.strip().lower()).rstrip("/")


HARD: dict[str, HardRule] = {
    "NPOA": _npoa,
    "NMDS": _nmds,
    "GSO": _gso,
    "NPUNCU": _npuncu,
    "NPU": _npu,
    "NCU": _ncu,
    "GS": _gs,
    "US": _us,
    "IS": _is,
}

# Conditions only a person can judge: each becomes an obligation the steward weighs.
REVIEW: dict[str, Callable[[Condition], str]] = {
    "RS": lambda c: "research-specific restrictions apply",
    "PUB": lambda c: "results must be published",
    "COL": lambda c: "collaboration with the data provider is required",
    "IRB": lambda c: "ethics approval is required",
    "MOR": lambda c: f"no publication before {c.parameter.get('until')}",
    "TS": lambda c: f"use is limited to {c.parameter.get('months')} months",
    "PS": lambda c: f"use is limited to the project {c.parameter.get('project')!r}",
    "RTN": lambda c: "derived data must be returned to the provider",
}


# Hard conditions met only by what the requester states: a person confirms it (an obligation).
CONFIRM: dict[str, Callable[[Condition, Requester], str | None]] = {"US": _us_unconfirmed}


def match(conditions: Iterable[Condition], purpose: Purpose, requester: Requester) -> Verdict:
    conditions = list(conditions)
    primaries = [c for c in conditions if (t := ontology.duo_term(c.term)) is not None and t.is_primary]
    reasons = _primary_reasons(primaries, purpose) if primaries else []
    obligations = []
    for condition in conditions:
        shorthand = condition.shorthand
        if shorthand in HARD and (reason := HARD[shorthand](condition, purpose, requester)):
            reasons.append(_note(condition, reason))
        elif shorthand in REVIEW:
            obligations.append(_note(condition, REVIEW[shorthand](condition)))
        elif shorthand in CONFIRM and (obligation := CONFIRM[shorthand](condition, requester)):
            obligations.append(_note(condition, obligation))
    if "CC" in purpose.extras and not _permits_clinical_care(conditions):
        cc = ontology.duo_by_shorthand("CC")
        reasons.append(Note(cc.curie, "CC", "clinical care use is not permitted"))
    if not primaries:
        reasons.append(Note("", "", "the dataset has no primary data-use condition"))
    if reasons:
        return Verdict(Compatibility.incompatible, tuple(reasons), tuple(obligations))
    if obligations:
        return Verdict(Compatibility.needs_review, (), tuple(obligations))
    return Verdict(Compatibility.compatible)


def _permits_clinical_care(conditions: list[Condition]) -> bool:
    return any(c.shorthand in ("CC", "NRES") for c in conditions)


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Several datasets' verdicts as one: the worst compatibility, every reason and obligation once."""
    verdicts = list(verdicts)
    order = list(Compatibility)
    worst = max((v.compatibility for v in verdicts), key=order.index, default=Compatibility.compatible)
    reasons = tuple(dict.fromkeys(n for v in verdicts for n in v.reasons))
    obligations = tuple(dict.fromkeys(n for v in verdicts for n in v.obligations))
    return Verdict(worst, reasons, obligations)
