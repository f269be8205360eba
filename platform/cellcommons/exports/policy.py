"""The DUA's export policy, column by column, applied to Arrow record batches without per-row Python.

Each column's sensitivity tag picks a treatment from the agreement's `export_policy` (tag → drop, generalise,
pseudonymise, keep; tags it does not name take `DEFAULT_EXPORT_POLICY`). Three rules sit above the agreement:
- a `direct_identifier` is always dropped (the decision service refuses any other treatment already);
- a donor id column (`donor`, `donor_id`, `donor_pseudonym`, `…_donor_id`) that leaves at all leaves as the
  agreement's pseudonym, whatever the treatment: the platform-wide pseudonym would let two recipients join
  their exports on donor (DOMAIN.md, Privacy);
- `generalise` coarsens by type: numbers to 5-year bands ("40-44"; ages are this domain's numeric
  quasi-identifiers), dates and timestamps to the first of their month (a date; a timestamp's month is taken in
  its own zone). Text cannot be generalised: free text under `generalise` is dropped; only `keep` lets it out.

Pseudonyms are HMAC-SHA256 over the value's text with a key per agreement, truncated to 128 bits (32 hex
characters: every row carries one, and half the length is a third less Parquet for a typical export). The key is
derived from the settings' secret key with HMAC over a label and the agreement id rather than stored: nothing
to seal, back up or lose, the same donor gets the same pseudonym in every export under one agreement and an
unrelated one under any other, and production already refuses the development secret. Rotating the secret
changes every agreement's pseudonyms, which is what a leaked secret calls for. pyarrow has no HMAC kernel, so
each batch's column is dictionary-encoded, only its distinct values (not yet seen) are hashed, and the
pseudonyms are mapped back with `take` on the dictionary indices.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cellcommons.access.schemas import DEFAULT_EXPORT_POLICY, ColumnTreatment
from cellcommons.catalogue.enums import Sensitivity
from cellcommons.errors import InvalidInput
from cellcommons.exports.arrays import same_values
from cellcommons.exports.errors import ColumnForbidden, MalformedRow
from cellcommons.settings import Settings

BAND = 5
PSEUDONYM_HEX = 32  # HMAC-SHA256 truncated to 128 bits (NIST SP 800-107): ample against collisions and guessing
DONOR_ID_NAMES = frozenset({"donor", "donor_id", "donor_pseudonym"})
MEMO_LIMIT = 65_536  # distinct values whose pseudonyms a column remembers across batches (a few MiB)
_DECIMAL = re.compile(r"decimal\((\d{1,2}),\s*(\d{1,2})\)")
_TIMESTAMP = re.compile(r"timestamp\((s|ms|us|ns)(?:,\s*([A-Za-z][A-Za-z0-9_+\-/]*))?\)")
_TYPES = {
    "string": pa.string(), "text": pa.string(), "boolean": pa.bool_(), "bool": pa.bool_(),
    "integer": pa.int64(), "int": pa.int64(), "int64": pa.int64(), "bigint": pa.int64(), "int32": pa.int32(),
    "double": pa.float64(), "float": pa.float64(), "float64": pa.float64(), "number": pa.float64(),
    "decimal": pa.decimal128(38, 9), "numeric": pa.decimal128(38, 9),
    "date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}  # fmt: skip


def arrow_type(declared: str) -> pa.DataType | None:
    """The Arrow type of a distribution's declared column type (None: not one the platform reads)."""
    text = declared.strip().lower()
    if found := _DECIMAL.fullmatch(text):
        precision, scale = int(found[1]), int(found[2])
        return pa.decimal128(precision, scale) if 1 <= precision <= 38 and scale <= precision else None
    if found := _TIMESTAMP.fullmatch(declared.strip()):  # timestamp(us, Europe/Amsterdam): the zone's case matters
        return _zoned(found[1], found[2])
    return _TYPES.get(text)


def _zoned(unit: str, zone: str | None) -> pa.DataType | None:
    try:
        kind = pa.timestamp(unit, tz=zone)
        pa.scalar(0, kind).cast(pa.string())  # an unknown zone fails here, not in the middle of an export
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return kind


def is_donor_id(name: str) -> bool:
    lowered = name.lower()
    return lowered in DONOR_ID_NAMES or lowered.endswith("_donor_id")


def _generalisable(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind) or _temporal(kind)


def _temporal(kind: pa.DataType) -> bool:
    return pa.types.is_date(kind) or pa.types.is_timestamp(kind)


@dataclass(frozen=True)
class ColumnPlan:
    """One column of the export: where it comes from, its tag and what the policy does to it."""

    name: str
    sensitivity: Sensitivity
    treatment: ColumnTreatment
    source_type: pa.DataType

    @property
    def output_type(self) -> pa.DataType:
        if self.treatment is ColumnTreatment.pseudonymise:
            return pa.string()
        if self.treatment is ColumnTreatment.generalise:
            return pa.date32() if _temporal(self.source_type) else pa.string()
        return self.source_type

    @property
    def banded(self) -> bool:
        """Exported as 5-year band labels."""
        return self.treatment is ColumnTreatment.generalise and not _temporal(self.source_type)

    def describe(self) -> dict[str, str]:
        return {"column": self.name, "sensitivity": self.sensitivity.value, "treatment": self.treatment.value,
                "type": str(self.output_type)}  # fmt: skip


def treatment_of(name: str, sensitivity: Sensitivity, kind: pa.DataType, export_policy: dict) -> ColumnTreatment:
    if sensitivity is Sensitivity.direct_identifier:
        return ColumnTreatment.drop
    chosen = ColumnTreatment(export_policy.get(sensitivity.value, DEFAULT_EXPORT_POLICY[sensitivity]))
    if chosen is ColumnTreatment.drop:
        return chosen
    if is_donor_id(name):
        return ColumnTreatment.pseudonymise
    if chosen is ColumnTreatment.generalise and not _generalisable(kind):
        return ColumnTreatment.drop  # free text cannot be coarsened
    return chosen


def plan_columns(declared: list[dict], export_policy: dict, requested: list[str] | None) -> list[ColumnPlan]:
    """The exported columns in source order: those the policy lets out, narrowed to `requested` when given.
    A requested column the policy keeps back (or that does not exist) is an error naming it."""
    plans, withheld = [], set()
    names = [column["name"] for column in declared]
    for index, name in enumerate(names):
        if name in names[:index]:  # the catalogue refuses this; fail closed on what was stored before it did
            message = f"the source declares column {name!r} more than once, so its policy is ambiguous"
            raise InvalidInput(message, field="distributionId")
    for index, column in enumerate(declared):
        kind = arrow_type(column["type"])
        if kind is None:
            message = f"column {column['name']!r} declares type {column['type']!r}, which exports cannot read"
            raise InvalidInput(message, field=f"columns[{index}].type")
        tag = Sensitivity(column["sensitivity"])
        treatment = treatment_of(column["name"], tag, kind, export_policy)
        if treatment is ColumnTreatment.drop:
            withheld.add(column["name"])
        else:
            plans.append(ColumnPlan(column["name"], tag, treatment, kind))
    if requested is None:
        return plans
    allowed = {plan.name: plan for plan in plans}
    for index, name in enumerate(requested):
        if name not in allowed:
            reason = "the agreement's policy withholds it" if name in withheld else "the source has no such column"
            raise ColumnForbidden(f"column {name!r} cannot be exported: {reason}", field=f"columns[{index}]")
    if len(set(requested)) != len(requested):
        raise InvalidInput("name each column once", field="columns")
    return [allowed[name] for name in requested]


def pseudonym_key(settings: Settings, agreement_id: uuid.UUID) -> bytes:
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"cellcommons-export-pseudonyms:" + agreement_id.bytes, hashlib.sha256).digest()


def pseudonym(key: bytes, value: str) -> str:
    """One value's pseudonym (the reference the vectorised path must agree with)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


class Pseudonymiser:
    """A column's pseudonyms: HMAC over each batch's distinct values not seen before, mapped back by index.

    A column that arrives dictionary-encoded (Parquet sources read donor ids so) brings its distinct values
    along; the batches of one Parquet row group share one dictionary, whose pseudonyms are kept for the next. It
    leaves dictionary-encoded too, the batch's indices into those pseudonyms: the writer stores a row group's
    dictionary and indices as they are instead of finding every row's pseudonym again in a hash table."""

    def __init__(self, key: bytes):
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._known = pa.array([], pa.string())
        self._names = pa.array([], pa.string())
        self._last: tuple[pa.Array, pa.Array] | None = None  # a dictionary and its pseudonyms

    def __call__(self, values: pa.Array) -> pa.Array:
        if pa.types.is_dictionary(values.type):
            return pa.DictionaryArray.from_arrays(values.indices, self._names_of(values.dictionary))
        encoded = pc.dictionary_encode(values)
        return self._names_of(encoded.dictionary).take(encoded.indices)

    def _names_of(self, distinct: pa.Array) -> pa.Array:
        """The pseudonyms of distinct values (no nulls: those stay in the indices), in their order."""
        if self._last is not None and same_values(self._last[0], distinct):
            return self._last[1]
        text = distinct if pa.types.is_string(distinct.type) else pc.cast(distinct, pa.string())
        found = pc.index_in(text, value_set=self._known)
        names = self._names.take(found)  # null where the value is new
        unseen = pc.is_null(found)
        if names.null_count:
            fresh_values = text.filter(unseen)
            fresh = pa.array([self._digest(value) for value in fresh_values.to_pylist()], pa.string())
            names = pc.replace_with_mask(names, unseen, fresh)
            self._remember(text, names, fresh_values, fresh)
        self._last = (distinct, names)
        return names

    def _remember(self, text: pa.Array, names: pa.Array, fresh_values: pa.Array, fresh: pa.Array) -> None:
        if len(self._known) + len(fresh) > MEMO_LIMIT:
            # Start over with this batch's values (every one of them named): memory stays bounded.
            self._known, self._names = text, names
        else:
            self._known = pa.concat_arrays([self._known, fresh_values])
            self._names = pa.concat_arrays([self._names, fresh])

    def _digest(self, value: str) -> str:
        mac = self._mac.copy()
        mac.update(value.encode())
        return mac.hexdigest()[:PSEUDONYM_HEX]


class Unbandable(ValueError):
    """A number no 5-year band holds: not finite, or too large to label exactly."""


def band(values: pa.Array) -> pa.DictionaryArray:
    """Numbers to 5-year band labels: 43 → "40-44", -3 → "-5--1". Computed on the distinct values (ages repeat)
    and kept dictionary-encoded: the writer stores a row group's labels once and each row's index, instead of
    finding every row's label again in a hash table."""
    encoded = pc.dictionary_encode(values)
    labels = pc.dictionary_encode(_band_labels(encoded.dictionary))  # ages of one band share its label
    return pa.DictionaryArray.from_arrays(labels.indices.take(encoded.indices), labels.dictionary)


def _band_labels(values: pa.Array) -> pa.Array:
    try:
        lower = _band_start(values)
        upper = pc.add_checked(lower, BAND - 1)
    except pa.ArrowInvalid:  # beyond int64 at either end
        extreme = max(abs(pc.min(values).as_py()), abs(pc.max(values).as_py()))
        raise Unbandable(f"{extreme} is too large for a 5-year band") from None
    return pc.binary_join_element_wise(pc.cast(lower, pa.string()), pc.cast(upper, pa.string()), "-")


def _band_start(values: pa.Array) -> pa.Array:
    """The first number of each value's band, exactly (integers stay integers: a float holds 2^53 at most)."""
    if pa.types.is_integer(values.type):
        whole = pc.cast(values, pa.int64())
        start = pc.multiply(pc.divide(whole, BAND), BAND)  # integer division truncates towards zero …
        return pc.if_else(pc.less(whole, start), pc.subtract_checked(start, BAND), start)  # … so step negatives down
    numbers = pc.cast(values, pa.float64())
    labelled = pc.and_(pc.is_finite(numbers), pc.less(pc.abs(numbers), float(2**53)))
    if not pc.all(pc.fill_null(labelled, True)).as_py():
        raise Unbandable(f"{numbers.filter(pc.invert(labelled))[0].as_py()} is not a number a 5-year band holds")
    return pc.cast(pc.multiply(pc.floor(pc.divide(numbers, float(BAND))), float(BAND)), pa.int64())


def month(values: pa.Array) -> pa.Array:
    """Dates and timestamps to the first day of their month (a timestamp's month in its own zone). Computed on
    the days they fall on (they repeat) and mapped back by position."""
    if pa.types.is_timestamp(values.type) and values.type.tz is not None:
        return _zoned_month(values)
    return _local_month(values)


def _local_month(values: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(values.type) and values.type.tz is not None:
        values = pc.local_timestamp(values)
    days, positions = _days_of(pc.cast(values, pa.date32()))
    return pc.floor_temporal(days, unit="month").take(positions)


def _zoned_month(values: pa.Array) -> pa.Array:
    """The month of zoned timestamps in their zone, converting to local time (a zone lookup per value, most of
    the policy's time on such a column) only the instants that need it: a UTC offset is less than a day, so an
    instant whose UTC day is neither the first nor the last of its month lies in that month in any zone. The
    rest (about 2 in 30) go through the zone."""
    days, positions = _days_of(pc.cast(values.view(pa.timestamp(values.type.unit)), pa.date32()))
    firsts = pc.floor_temporal(days, unit="month")
    following = pc.add(days.view(pa.int32()), pa.scalar(1, pa.int32())).view(pa.date32())
    edge = pc.or_(pc.equal(days, firsts), pc.not_equal(pc.floor_temporal(following, unit="month"), firsts))
    months = firsts.take(positions)
    near_edge = pc.fill_null(edge.take(positions), False)
    if not pc.any(near_edge).as_py():
        return months
    return pc.replace_with_mask(months, near_edge, _local_month(values.filter(near_edge)))


def _days_of(dates: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Dates as (days, each date's position among them) to compute on the days once. The days are every day from
    the earliest date to the latest when that span is no longer than the dates (a batch's dates mostly are): the
    positions are then a subtraction, where finding the distinct days hashes every date."""
    numbers = dates.view(pa.int32())
    bounds = pc.min_max(numbers)
    earliest, latest = bounds["min"].as_py(), bounds["max"].as_py()
    if earliest is None or latest - earliest >= len(dates):
        encoded = pc.dictionary_encode(dates)
        return encoded.dictionary, encoded.indices
    span = pa.array(np.arange(earliest, latest + 1, dtype=np.int32)).view(pa.date32())
    return span, pc.subtract(numbers, pa.scalar(earliest, pa.int32()))


class PolicyApplier:
    """Turns source batches (already in their declared types) into export batches: of `schema`, except that
    pseudonyms of dictionary-encoded sources stay dictionary-encoded (of the same values)."""

    def __init__(self, plans: list[ColumnPlan], key: bytes):
        self.plans = plans
        self.schema = pa.schema([pa.field(plan.name, plan.output_type) for plan in plans])
        self.pseudonymised = [p.name for p in plans if p.treatment is ColumnTreatment.pseudonymise]
        self.banded = [p.name for p in plans if p.banded]
        self._pseudonymisers = {name: Pseudonymiser(key) for name in self.pseudonymised}

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [self._treated(plan, batch.column(plan.name)) for plan in self.plans]
        return pa.RecordBatch.from_arrays(arrays, names=self.schema.names)

    def _treated(self, plan: ColumnPlan, values: pa.Array) -> pa.Array:
        if plan.treatment is ColumnTreatment.pseudonymise:
            return self._pseudonymisers[plan.name](values)
        if plan.treatment is ColumnTreatment.generalise:
            return month(values) if _temporal(values.type) else self._banded(plan.name, values)
        return values

    @staticmethod
    def _banded(name: str, values: pa.Array) -> pa.Array:
        try:
            return band(values)
        except Unbandable as exc:
            raise MalformedRow(f"column {name!r}: {exc}", field=name) from None
