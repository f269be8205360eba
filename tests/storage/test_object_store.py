import io
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from minio import Minio
from minio.error import S3Error

from cellcommons.errors import InvalidInput, NotFound
from cellcommons.storage import ObjectStore


def _http(method, url, data=None):
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_put_get_stat_delete_round_trip(object_store: ObjectStore, bucket):
    payload = b"donor_pseudonym,viability\nCCP-0001,93.5\n" * 1000
    info = object_store.put_stream(bucket, "staging/a.csv", io.BytesIO(payload), len(payload), "text/csv")
    assert info.size == len(payload)
    assert object_store.stat(bucket, "staging/a.csv").content_type == "text/csv"
    assert b"".join(object_store.get_stream(bucket, "staging/a.csv", chunk_size=4096)) == payload
    object_store.delete(bucket, "staging/a.csv")
    assert not object_store.exists(bucket, "staging/a.csv")
    with pytest.raises(NotFound, match=r"staging/a\.csv"):
        list(object_store.get_stream(bucket, "staging/a.csv"))


def test_the_tail_of_an_object_comes_with_its_size(object_store: ObjectStore, bucket):
    payload = bytes(range(256)) * 64
    object_store.put_stream(bucket, "t.bin", io.BytesIO(payload), len(payload))
    assert object_store.tail(bucket, "t.bin", 100) == (len(payload), payload[-100:])
    assert object_store.tail(bucket, "t.bin", 10 * len(payload)) == (len(payload), payload)  # shorter: all of it
    with pytest.raises(NotFound, match=r"missing\.bin"):
        object_store.tail(bucket, "missing.bin", 100)


def test_a_stream_of_unknown_length_is_uploaded_in_parts(object_store: ObjectStore, bucket):
    payload = bytes(range(256)) * (20 * 4096 * 2)  # 40 MiB: more than two 16 MiB parts
    info = object_store.put_stream(bucket, "big.bin", io.BytesIO(payload))
    assert info.size == len(payload)
    assert "-" in info.etag  # a multipart upload's ETag names its part count


def test_ensure_bucket_is_idempotent(object_store: ObjectStore, bucket):
    object_store.ensure_bucket(bucket)
    assert object_store.client.bucket_exists(bucket)


def test_presigned_get_and_put_work_and_expiry_is_explicit_and_bounded(object_store: ObjectStore, bucket):
    put_url = object_store.presign_put(bucket, "up.txt", timedelta(minutes=5))
    assert _http("PUT", put_url, b"uploaded by a browser")[0] == 200
    get_url = object_store.presign_get(bucket, "up.txt", timedelta(minutes=5))
    assert _http("GET", get_url) == (200, b"uploaded by a browser")
    for bad in (timedelta(0), timedelta(days=8)):
        with pytest.raises(InvalidInput) as caught:
            object_store.presign_get(bucket, "up.txt", bad)
        assert caught.value.field == "expires"


def test_the_s3_server_rejects_a_wrong_secret(object_store: ObjectStore, bucket, settings):
    object_store.put_stream(bucket, "secret.txt", io.BytesIO(b"x"), 1)
    impostor = Minio(
        settings.s3_endpoint,
        settings.s3_access_key,
        "not-the-secret",
        secure=False,
        region=settings.s3_region,
    )
    with pytest.raises(S3Error) as caught:
        impostor.get_object(bucket, "secret.txt")
    assert caught.value.code == "SignatureDoesNotMatch"
    assert _http("GET", f"http://{settings.s3_endpoint}/{bucket}/secret.txt")[0] == 403  # unsigned


def test_the_s3_server_rejects_a_tampered_or_expired_presigned_url(object_store: ObjectStore, bucket):
    for key in ("mine.txt", "other.txt"):
        object_store.put_stream(bucket, key, io.BytesIO(key.encode()), len(key))
    url = object_store.presign_get(bucket, "mine.txt", timedelta(minutes=5))
    assert _http("GET", url)[0] == 200
    assert _http("GET", url.replace("mine.txt", "other.txt"))[0] == 403
    assert _http("GET", url.replace("X-Amz-Expires=300", "X-Amz-Expires=600"))[0] == 403
    short = object_store.presign_get(bucket, "mine.txt", timedelta(seconds=1))
    time.sleep(2.1)
    assert _http("GET", short)[0] == 403
