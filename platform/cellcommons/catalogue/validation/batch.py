"""A batch (lot) with its QC results, judged with its specification and its collections (rules 1–5, 7–10)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise

from cellcommons.catalogue.enums import ResultStatus, Route, TestType
from cellcommons.catalogue.identifiers import SEC_DONATION, din_issues, sec_donation_issues
from cellcommons.catalogue.schemas import BatchIn, CollectionIn, Finding, SpecificationIn
from cellcommons.catalogue.validation.findings import error, warning
from cellcommons.catalogue.validation.isct import isct_findings
from cellcommons.catalogue.validation.qc import (
    RELEASED,
    consistency_findings,
    release_findings,
    result_findings,
    usable_unit,
)
from cellcommons.catalogue.validation.tissue import tissue_findings

# Rule 4: endotoxin ceiling K in EU/kg/h by route (Ph. Eur. 5.1.10); every other route is parenteral, K = 5.
ENDOTOXIN_CEILING = {Route.intrathecal: Decimal("0.2")}
PARENTERAL_CEILING = Decimal(5)


@dataclass(frozen=True)
class BatchContext:
    specification: SpecificationIn | None
    collections: Sequence[CollectionIn] = ()  # the collections `batch.collections` names, resolved by the caller


def validate_batch(batch: BatchIn, context: BatchContext) -> list[Finding]:
    findings = _specification_presence(batch, context.specification)
    for index, result in enumerate(batch.qc_results):
        findings += result_findings(index, result)
    if context.specification is not None:
        findings += consistency_findings(batch.qc_results, context.specification)
    findings += release_findings(batch.release_status, batch.qc_results, context.specification)
    findings += _endotoxin_findings(batch)
    if batch.claims_isct:
        findings += isct_findings(batch.qc_results)
    findings += _collection_reference_findings(batch)
    findings += _release_date_findings(batch)
    findings += _chronology_findings(batch, context.collections)
    findings += tissue_findings(batch.tissue, batch.cell_type, batch.product_name, "product_name")
    return findings


def _specification_presence(batch: BatchIn, spec: SpecificationIn | None) -> list[Finding]:
    if spec is None and batch.specification_version is not None:
        message = f"specification version {batch.specification_version!r} was not found"
        return [error("specification_missing", "specification_version", message)]
    if spec is None and batch.release_status in RELEASED:
        message = f"a {batch.release_status} batch must name the specification it was released against"
        return [error("specification_missing", "specification_version", message)]
    if spec is not None and batch.specification_version not in (None, spec.version):
        message = f"batch names specification {batch.specification_version!r} but was given {spec.version!r}"
        return [error("specification_version_mismatch", "specification_version", message)]
    return []


def _release_date_findings(batch: BatchIn) -> list[Finding]:
    if batch.release_status in RELEASED and batch.released_on is None:
        return [error("release_date_missing", "released_on", f"a {batch.release_status} batch needs its release date")]
    return []


def _endotoxin_findings(batch: BatchIn) -> list[Finding]:
    """Rule 4: the dose a patient receives per hour stays under the route's ceiling (equal passes)."""
    if batch.route is None or batch.max_infusion_ml_per_kg_h is None:
        return []
    ceiling = ENDOTOXIN_CEILING.get(batch.route, PARENTERAL_CEILING)
    # A quarantined or rejected lot with a high value is legitimate data; a released one is not.
    flag = error if batch.release_status in RELEASED else warning
    findings = []
    for index, result in enumerate(batch.qc_results):
        if result.test_type != TestType.endotoxin or result.status != ResultStatus.final:
            continue
        if result.value is None or not usable_unit(result):
            continue
        dose = result.value * batch.max_infusion_ml_per_kg_h
        if dose > ceiling:
            message = (
                f"endotoxin {result.value} {{EU}}/mL × {batch.max_infusion_ml_per_kg_h} mL/kg/h = {dose} EU/kg/h "
                f"exceeds the {batch.route} ceiling of {ceiling} EU/kg/h"
            )
            findings.append(flag("endotoxin_ceiling", f"qc_results[{index}].value", message))
    return findings


def _collection_reference_findings(batch: BatchIn) -> list[Finding]:
    """Each named collection is a well-formed DIN or SEC donation part, else it can never be resolved."""
    findings = []
    for index, reference in enumerate(batch.collections):
        din, sec = din_issues(reference), sec_donation_issues(reference)
        if din and sec:
            # Report against the format whose length it has; a DIN otherwise (the usual identifier).
            problems = sec if len(reference) == SEC_DONATION.length else din
            message = f"{reference!r} is neither a valid DIN nor a SEC donation part: " + "; ".join(
                p.message for p in problems
            )
            findings.append(error("collection_reference_invalid", f"collections[{index}]", message))
    return findings


def _chronology_findings(batch: BatchIn, collections: Sequence[CollectionIn]) -> list[Finding]:
    """Rule 9: collection ≤ manufacture ≤ release < expiry, between neighbouring dates that are recorded."""
    events: list[tuple[str, str, date | None]] = []
    if collections:
        index, latest = max(enumerate(collections), key=lambda pair: pair[1].collected_on)
        events.append(
            ("collection", f"collections[{_reference_index(batch, latest, index)}].collected_on", latest.collected_on)
        )
    events += [
        ("manufacture", "manufactured_on", batch.manufactured_on),
        ("release", "released_on", batch.released_on),
        ("expiry", "expires_on", batch.expires_on),
    ]
    recorded = [event for event in events if event[2] is not None]
    findings = []
    for (before, before_field, earlier), (after, field, later) in pairwise(recorded):
        # Expiry must fall after everything; the other steps may happen the same day.
        out_of_order = later <= earlier if after == "expiry" else later < earlier
        if out_of_order:
            relation = "after" if after == "expiry" else "on or after"
            message = f"{after} date {later} ({field}) must be {relation} the {before} date {earlier} ({before_field})"
            findings.append(error("chronology", field, message))
    return findings


def _reference_index(batch: BatchIn, collection: CollectionIn, fallback: int) -> int:
    """The position in `batch.collections` that names `collection` (by DIN or SEC donation part)."""
    for index, reference in enumerate(batch.collections):
        if reference in (collection.din, collection.sec_donation):
            return index
    return fallback
