"""Turning catalogue records into what a person reads: DUO conditions in plain words, sizes, and the QC chart.

The chart is SVG made on the server (no JavaScript): one row per release test of a lot, the measured value as
a dot on a 0–100 % scale, the specification limit as a line, pass/fail in words as well as colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from cellcommons.catalogue.ontology import DuoTerm, duo_term, duo_terms, label

PLAIN_DUO = {
    "NRES": "No restriction on use.",
    "GRU": "Any research use.",
    "HMB": "Health, medical or biomedical research (not ancestry research).",
    "DS": "Research on a specific disease only.",
    "POA": "Population origins or ancestry research only.",
    "NPOA": "No population origins or ancestry research.",
    "RS": "Only the research types named.",
    "NMDS": "No general methods development.",
    "GSO": "Genetic studies only.",
    "NPUNCU": "Not-for-profit, non-commercial use only.",
    "NPU": "Not-for-profit organisations only.",
    "NCU": "Non-commercial use only.",
    "PUB": "Results must be published.",
    "COL": "Collaboration with the data provider is required.",
    "IRB": "Ethics approval is required.",
    "GS": "Use limited to a geographic region.",
    "MOR": "No publication before a date.",
    "TS": "Use limited in time.",
    "US": "Named users only.",
    "PS": "One named project only.",
    "IS": "Named institutions only.",
    "RTN": "Derived data must be returned.",
    "CC": "Clinical care use.",
}


def condition_text(term: str, parameter: dict) -> str:
    duo = duo_term(term)
    if duo is None:
        return term
    text = PLAIN_DUO.get(duo.shorthand, duo.label)
    details = []
    if disease := parameter.get("disease"):
        details.append(label(disease) or disease)
    if regions := parameter.get("regions"):
        details.append(", ".join(regions))
    if months := parameter.get("months"):
        details.append(f"{months} months")
    for key in ("until", "project"):
        if parameter.get(key):
            details.append(str(parameter[key]))
    for key in ("institutions", "users"):
        if parameter.get(key):
            details.append(", ".join(parameter[key]))
    return f"{text} ({'; '.join(details)})" if details else text


def duo_choices(keep: Callable[[DuoTerm], bool]) -> list[tuple[str, str, str]]:
    """(CURIE, name, what it means) of the DUO terms a form offers, in the order DUO lists them."""
    return [
        (t.curie, f"{t.label[:1].upper()}{t.label[1:]} ({t.shorthand})", PLAIN_DUO.get(t.shorthand, ""))
        for t in duo_terms().values()
        if keep(t)
    ]


def file_size(size: int | None) -> str:
    if size is None:
        return "not yet uploaded"
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size} GB"


@dataclass(frozen=True)
class ChartRow:
    label: str
    value: Decimal
    limit: Decimal | None
    operator: str | None
    passed: bool | None


def chart_rows(results, criteria) -> list[ChartRow]:
    """Percentage results (viability, marker positivity) with the limit their specification sets."""
    limits = {(c.test_type, (c.analyte or "").lower()): c for c in criteria if c.limit_value is not None}
    rows = []
    for r in results:
        if r.unit != "%" or r.value is None:
            continue
        criterion = limits.get((r.test_type, (r.analyte or "").lower()))
        name = r.analyte or r.test_type.value.replace("_", " ")
        if r.timepoint:
            name += f" ({r.timepoint.value.replace('_', '-')})"
        rows.append(
            ChartRow(
                label=name,
                value=r.value,
                limit=criterion.limit_value if criterion else None,
                operator=criterion.operator.value if criterion else None,
                passed=r.passed,
            )
        )
    return rows


ROW_HEIGHT, LEFT, WIDTH = 26, 150, 600


def qc_chart(title: str, rows: list[ChartRow], key: int) -> str:
    """An accessible SVG: a title, a description, and text for every value and verdict. `key` (the chart's place
    on its page) makes the title's id unique there, so each chart is labelled by its own lot."""
    height = ROW_HEIGHT * len(rows) + 34
    scale = (WIDTH - LEFT - 130) / 100
    parts = [
        f'<svg role="img" aria-labelledby="qc-title-{key}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" class="qc-chart">',
        f'<title id="qc-title-{key}">{escape(title)}</title>',
    ]
    for i, row in enumerate(rows):
        y = 20 + i * ROW_HEIGHT
        x = LEFT + float(row.value) * scale
        verdict = {True: "pass", False: "fail", None: "pending"}[row.passed]
        parts.append(f'<text x="0" y="{y + 4}" class="qc-label">{escape(row.label)}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + 100 * scale}" y2="{y}" class="qc-axis"/>')
        if row.limit is not None:
            lx = LEFT + float(row.limit) * scale
            parts.append(
                f'<line x1="{lx}" y1="{y - 8}" x2="{lx}" y2="{y + 8}" class="qc-limit">'
                f"<title>limit {escape(row.operator or '')} {_number(row.limit)} %</title></line>"
            )
        parts.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" class="qc-{verdict}"/>')
        parts.append(
            f'<text x="{LEFT + 100 * scale + 8}" y="{y + 4}" class="qc-value">{_number(row.value)} % {verdict}</text>'
        )
    parts.append(f'<text x="{LEFT}" y="{height - 4}" class="qc-scale">0 %</text>')
    parts.append(f'<text x="{LEFT + 100 * scale - 24}" y="{height - 4}" class="qc-scale">100 %</text>')
    parts.append("</svg>")
    return "".join(parts)


def _number(value: Decimal) -> str:
    """95.500000 → 95.5: stored precision is not measured precision."""
    return f"{value.normalize():f}"


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


REQUEST_STATUS = {
    "draft": "Draft",
    "submitted": "Submitted",
    "in_review": "In review",
    "approved": "Approved (agreement not in force yet)",
    "rejected": "Rejected",
    "active": "Approved: agreement in force",
    "expired": "Expired",
    "revoked": "Revoked",
}


def status_words(status) -> str:
    return REQUEST_STATUS.get(status.value, status.value)
