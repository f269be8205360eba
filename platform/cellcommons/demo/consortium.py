"""The synthetic consortium: deterministic from a seed, realistic enough to demo, test and benchmark on.

Institutions in NL, BE and CA of different sectors; BM-, AT-, UC- and WJ-MSC lots with plausible QC values
against their specifications, some failing (rejected) or pending (conditionally released, quarantine); donors
with banded ages; collections with valid DINs; datasets with varied DUO conditions, data types and column
schemas. Records come out as plain dicts in the catalogue's input shape (`catalogue.schemas`), so the same
records can go through the service (validated one by one) or be bulk-loaded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from cellcommons.catalogue.identifiers import make_din


@dataclass(frozen=True)
class Scale:
    name: str
    batches_per_institution: int
    datasets_per_institution: int
    qc_per_batch: int = 10


SCALES = {
    "tiny": Scale("tiny", batches_per_institution=4, datasets_per_institution=2),
    "demo": Scale("demo", batches_per_institution=30, datasets_per_institution=8),
    # 4 institutions: 100 000 batches, 1 000 000 QC results, 10 000 datasets.
    "bench": Scale("bench", batches_per_institution=25_000, datasets_per_institution=2_500),
}

INSTITUTIONS = [
    dict(slug="leiden-scgt", name="Leiden Stem Cell and Gene Therapy Facility", country="NL",
         sector="non_profit", transfer_basis="eea", isbt_facility="G1234"),
    dict(slug="lowlands-regmed", name="Dutch-Flemish Regenerative Medicine Partnership", country="BE",
         sector="public", transfer_basis="eea", isbt_facility="B5678"),
    dict(slug="maple-ccrm", name="Canadian Centre for Regenerative Medicine Commercialisation", country="CA",
         sector="non_profit", transfer_basis="adequacy", isbt_facility="W4321"),
    dict(slug="stroma-bio", name="Stroma Bio B.V.", country="NL", sector="commercial", transfer_basis="eea",
         isbt_facility="N2468"),
]  # fmt: skip


@dataclass(frozen=True)
class Source:
    """An MSC source tissue: UBERON tissue, CL cell type and the display prefix (DOMAIN.md rule 10)."""

    prefix: str
    tissue: str
    cell_type: str
    product: str


SOURCES = [
    Source("BM", "UBERON:0002371", "CL:0002540", "BM-MSC"),
    Source("AT", "UBERON:0001013", "CL:0002570", "AT-MSC"),
    Source("UC", "UBERON:0002331", "CL:0002569", "UC-MSC"),
    Source("WJ", "UBERON:0003422", "CL:0002568", "WJ-MSC"),
]

MARKERS_POSITIVE = ["CD73", "CD90", "CD105"]
MARKERS_NEGATIVE = ["CD45", "CD34", "HLA-DR"]
DISEASES = ["MONDO:0005147", "MONDO:0013730", "MONDO:0005011", "MONDO:0005178", "MONDO:0005252"]
DATA_TYPES = ["flow cytometry", "bulk RNA-seq", "single-cell RNA-seq", "proteomics", "potency assay",
              "release testing", "clinical outcomes", "imaging"]  # fmt: skip
STANDARDS = ["MIFlowCyt", "MIACARM", "MINSEQE", "ISCT MSC criteria"]
CONDITION_SETS = [
    [dict(term="DUO:0000042")],  # GRU
    [dict(term="DUO:0000006"), dict(term="DUO:0000045")],  # HMB + NPU
    [dict(term="DUO:0000006"), dict(term="DUO:0000021"), dict(term="DUO:0000019")],  # HMB + IRB + PUB
    [dict(term="DUO:0000004")],  # NRES
    [dict(term="DUO:0000042"), dict(term="DUO:0000022", regions=["EEA"])],  # GRU + GS
]


def specification(source: Source) -> dict:
    """A typical clinical MSC release specification (each product's own; not the ISCT research criteria)."""
    return dict(
        version=f"{source.product}-SPEC-3",
        product_name=source.product,
        criteria=[
            dict(test_type="viability", timepoint="post_thaw", operator="≥", limit="70", unit="%"),
            *[
                dict(test_type="identity_marker", analyte=m, operator="≥", limit="80", unit="%")
                for m in MARKERS_POSITIVE
            ],
            *[
                dict(test_type="identity_marker", analyte=m, operator="≤", limit="2", unit="%")
                for m in MARKERS_NEGATIVE
            ],
            dict(test_type="sterility", operator="in", allowed=["no_growth", "negative"]),
            dict(test_type="mycoplasma", operator="=", expected="negative"),
            dict(test_type="endotoxin", operator="≤", limit="1.0", unit="{EU}/mL"),
        ],
    )


@dataclass
class InstitutionRecords:
    institution: dict
    specifications: list[dict] = field(default_factory=list)
    donors: list[dict] = field(default_factory=list)
    collections: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    datasets: list[dict] = field(default_factory=list)


class Consortium:
    def __init__(self, scale: Scale, seed: int = 2026):
        self.scale = scale
        self.seed = seed

    def records(self) -> Iterator[InstitutionRecords]:
        for index, institution in enumerate(INSTITUTIONS):
            yield _InstitutionGenerator(institution, self.scale, random.Random(self.seed * 1009 + index)).build()


class _InstitutionGenerator:
    def __init__(self, institution: dict, scale: Scale, rng: random.Random):
        self.institution = institution
        self.scale = scale
        self.rng = rng
        self.out = InstitutionRecords(institution=institution)
        self.short = institution["slug"].split("-")[0][:4].upper()

    def build(self) -> InstitutionRecords:
        self.out.specifications = [specification(s) for s in SOURCES]
        for n in range(self.scale.batches_per_institution):
            self._batch(n)
        for n in range(self.scale.datasets_per_institution):
            self._dataset(n)
        return self.out

    def _day(self, start: date, span_days: int) -> date:
        return start + timedelta(days=self.rng.randrange(span_days))

    def _donor(self, n: int, source: Source) -> dict:
        rng = self.rng
        # Umbilical cord and Wharton's jelly come from newborns' cords (the mother donates): adults either way.
        relation = "autologous" if source.prefix == "BM" and rng.random() < 0.3 else "allogeneic_unrelated"
        donor = dict(
            pseudonym=f"{self.short}D{n:07d}{rng.getrandbits(24):06X}",
            relation=relation,
            sex=rng.choice(["female", "male"]),
            age_band_start=rng.randrange(20, 70, 5),
            eligibility="eligible",
            tests=[
                dict(marker=m, result="negative", tested_on=date(2025, 1, 6) + timedelta(days=n % 300))
                for m in ("anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis")
            ],
        )
        self.out.donors.append(donor)
        return donor

    def _batch(self, n: int) -> None:
        rng = self.rng
        source = SOURCES[n % len(SOURCES)]
        donor = self._donor(n, source)
        # Donor testing happens at (or before) collection.
        collected = max(self._day(date(2025, 1, 6), 300), donor["tests"][0]["tested_on"])
        din = make_din(self.institution["isbt_facility"], collected.year % 100, n + 1)
        self.out.collections.append(
            dict(donor=donor["pseudonym"], din=din, tissue=source.tissue, collected_on=collected,
                 volume_ml=Decimal(rng.randrange(20, 120)), chain_of_identity_id=f"COI-{self.short}-{n:07d}")
        )  # fmt: skip
        manufactured = collected + timedelta(days=rng.randrange(14, 35))
        qc, outcome = self._qc_results(manufactured)
        released = manufactured + timedelta(days=rng.randrange(3, 10))
        batch = dict(
            lot_number=f"{source.prefix}-{self.short}-{n:07d}",
            product_name=f"{source.product} {self.institution['slug'].split('-')[0].title()}",
            cell_type=source.cell_type,
            tissue=source.tissue,
            donors=[donor["pseudonym"]],
            collections=[din],
            manufactured_on=manufactured,
            passage=rng.randrange(2, 6),
            population_doublings=Decimal(rng.randrange(60, 180)) / 10,
            culture_supplement=rng.choice(["hpl", "hpl", "fbs", "serum_free"]),
            total_cells=rng.randrange(50, 300) * 10**6,
            concentration_1e6_per_ml=Decimal(rng.randrange(10, 50)) / 10,
            volume_ml=Decimal(rng.randrange(20, 100)),
            containers=rng.randrange(1, 5),
            cryoprotectant="DMSO 10 % in albumin",
            dmso_percent=Decimal(10),
            storage_temperature_c=Decimal(-150),
            expires_on=released + timedelta(days=365),
            release_status=outcome,
            released_on=None if outcome == "quarantine" else released,
            specification_version=f"{source.product}-SPEC-3",
            route=rng.choice(["intravenous", "intravenous", "local"]),
            max_infusion_ml_per_kg_h=Decimal(2),
            qc_results=qc,
        )
        self.out.batches.append(batch)

    def _qc_results(self, manufactured: date) -> tuple[list[dict], str]:
        """Ten release results; about 6 % of lots fail a test, 3 % wait for sterility, 4 % are in quarantine."""
        rng = self.rng
        tested = manufactured + timedelta(days=2)
        roll = rng.random()
        failing = roll < 0.06
        pending_sterility = 0.06 <= roll < 0.09
        viability = Decimal(rng.randrange(620 if failing else 760, 980)) / 10
        results = [_numeric("viability", None, viability, "%", viability >= 70, tested, "post_thaw")]
        for marker in MARKERS_POSITIVE:
            value = Decimal(rng.randrange(880, 1000)) / 10
            results.append(_numeric("identity_marker", marker, value, "%", value >= 80, tested))
        for marker in MARKERS_NEGATIVE:
            value = Decimal(rng.randrange(0, 19)) / 10
            results.append(_numeric("identity_marker", marker, value, "%", value <= 2, tested))
        results.append(
            dict(test_type="sterility", method="BacT/ALERT", status="pending", tested_on=tested)
            if pending_sterility
            else dict(test_type="sterility", method="BacT/ALERT", status="final", qualitative="no_growth",
                      passed=True, tested_on=tested)
        )  # fmt: skip
        results.append(dict(test_type="mycoplasma", method="qPCR", status="final", qualitative="negative",
                            passed=True, tested_on=tested))  # fmt: skip
        endotoxin = Decimal(rng.randrange(5, 60)) / 100
        results.append(_numeric("endotoxin", None, endotoxin, "{EU}/mL", endotoxin <= 1, tested))
        if not all(r.get("passed", True) for r in results):
            return results, "rejected"
        if pending_sterility:
            return results, "conditionally_released"
        return results, "quarantine" if roll > 0.96 else "released"

    def _dataset(self, n: int) -> None:
        rng = self.rng
        batches = rng.sample(self.out.batches, k=min(len(self.out.batches), rng.randrange(1, 6)))
        source = next(s for s in SOURCES if s.tissue == batches[0]["tissue"])
        linked = [b for b in batches if b["tissue"] == source.tissue]
        conditions = list(rng.choice(CONDITION_SETS))
        if rng.random() < 0.25:
            conditions = [dict(term="DUO:0000007", disease=rng.choice(DISEASES))]
        data_types = sorted(rng.sample(DATA_TYPES, k=rng.randrange(1, 4)))
        access = rng.choices(["public", "restricted", "non_public"], weights=[2, 7, 1])[0]
        self.out.datasets.append(
            dict(
                accession=f"CCD-{self.short}-{n:06d}",
                title=f"{source.product} {data_types[0]} study {n + 1} ({self.institution['country']})",
                description=(
                    f"{_sentence(', '.join(data_types))} data on {len(linked)} {source.product} lot(s) "
                    f"manufactured at {self.institution['name']}, with release QC and donor metadata."
                ),
                data_types=data_types,
                cell_type=source.cell_type,
                tissue=source.tissue,
                donor_count=len(linked),
                batches=[b["lot_number"] for b in linked],
                # Pseudonymised health data are personal data: never public.
                personal_data_level="anonymous" if access == "public" else "pseudonymised",
                access_rights=access,
                conditions=conditions,
                standards=sorted(rng.sample(STANDARDS, k=rng.randrange(0, 3))),
                licence="CC-BY-4.0" if access == "public" else "Consortium DUA",
                keywords=[source.product, *data_types],
                distributions=[_distribution(n, data_types[0])],
            )
        )


def _numeric(test_type, analyte, value, unit, passed, tested_on, timepoint=None) -> dict:
    result = dict(test_type=test_type, value=value, unit=unit, status="final", passed=bool(passed), tested_on=tested_on)
    if analyte:
        result["analyte"] = analyte
    if timepoint:
        result["timepoint"] = timepoint
    return result


def _distribution(n: int, data_type: str) -> dict:
    return dict(
        file_name=f"{data_type.replace(' ', '_')}_{n:06d}.csv",
        media_type="text/csv",
        columns=[
            dict(name="donor_pseudonym", type="string", sensitivity="quasi_identifier"),
            dict(name="age_band", type="string", sensitivity="quasi_identifier"),
            dict(name="lot_number", type="string", sensitivity="plain"),
            dict(name="viability_pct", type="double", sensitivity="plain"),
            dict(name="adverse_events", type="string", sensitivity="sensitive"),
        ],
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
