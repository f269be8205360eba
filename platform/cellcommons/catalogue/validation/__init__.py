"""The domain rules of DOMAIN.md (1–11) as pure functions over the input schemas: no database.

Each returns findings whose `field` is a path into the input it was given (`qc_results[2].unit`).
"""

from cellcommons.catalogue.validation.batch import BatchContext, validate_batch
from cellcommons.catalogue.validation.conditions import validate_conditions
from cellcommons.catalogue.validation.dataset import DatasetContext, validate_dataset
from cellcommons.catalogue.validation.donation import validate_collection, validate_donor
from cellcommons.catalogue.validation.findings import findings_from_validation_error
from cellcommons.catalogue.validation.institution import validate_institution
from cellcommons.catalogue.validation.specification import validate_specification

__all__ = [
    "BatchContext",
    "DatasetContext",
    "findings_from_validation_error",
    "validate_batch",
    "validate_collection",
    "validate_conditions",
    "validate_dataset",
    "validate_donor",
    "validate_institution",
    "validate_specification",
]
