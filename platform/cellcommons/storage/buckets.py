"""Where files live: one bucket per institution, one for exports; object keys are internal and never shown.

Buckets are named by the institution's id (immutable, always a valid bucket name) rather than its slug.
Inside an institution's bucket, `staging/` holds uploads that are not verified yet and `files/` the verified
files of dataset versions, one key per accepted upload (a replaced file never overwrites a key in use).
"""

from __future__ import annotations

import re
import uuid

from cellcommons.errors import InvalidInput
from cellcommons.settings import Settings

MAX_BUCKET_NAME = 63  # S3
INSTITUTION_PREFIX = "inst-"


def _named(settings: Settings, name: str) -> str:
    bucket = settings.bucket(name)
    if len(bucket) > MAX_BUCKET_NAME:
        raise InvalidInput(f"bucket names would exceed {MAX_BUCKET_NAME} characters", field="CELLCOMMONS_BUCKET_PREFIX")
    return bucket


def institution_bucket(settings: Settings, institution_id: uuid.UUID) -> str:
    return _named(settings, f"{INSTITUTION_PREFIX}{institution_id.hex}")


def institution_bucket_prefix(settings: Settings) -> str:
    """What every institution bucket's name starts with."""
    return settings.bucket(INSTITUTION_PREFIX)


def exports_bucket(settings: Settings) -> str:
    return _named(settings, "exports")


def staging_key(upload_id: uuid.UUID | str) -> str:
    return f"staging/{upload_id}"


FILES = "files/"  # the prefix every file key shares
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The keys below as the storage cleanup reads them back: the groups are the ids of the records that may name them
FILE_KEY = re.compile(rf"{FILES}({_UUID})/{_UUID}/({_UUID})")  # the dataset version, the upload
EXPORT_KEY = re.compile(rf"{_UUID}/({_UUID})-[0-9a-f]{{12}}\.parquet")  # the export job


def file_key(dataset_version_id: uuid.UUID, distribution_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    return f"{FILES}{dataset_version_id}/{distribution_id}/{upload_id}"


def export_key(agreement_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """A new key for each attempt at an export job: a dead attempt's object never stands for a later one's."""
    return f"{agreement_id}/{job_id}-{uuid.uuid4().hex[:12]}.parquet"
