"""Object storage through `cellcommons.storage` against the `minio` SDK called directly, same server, same run."""

from __future__ import annotations

import io
from datetime import timedelta

from rich.console import Console

from bench.report import Measure, Report, rate
from cellcommons.demo.scratch import ScratchStack
from cellcommons.storage import ObjectStore

MiB = 1024 * 1024


def run(stack: ScratchStack, quick: bool, console: Console) -> Report:
    settings = stack.settings_for(stack.template)
    store = ObjectStore.from_settings(settings)
    client = store.client
    bucket = settings.bucket("bench")
    store.ensure_bucket(bucket)
    size = (4 if quick else 64) * MiB
    payload = bytes(range(256)) * (size // 256)

    def put_ours() -> int:
        store.put_stream(bucket, "ours.bin", io.BytesIO(payload), len(payload))
        return size // MiB

    def put_direct() -> int:
        client.put_object(bucket, "direct.bin", io.BytesIO(payload), len(payload))
        return size // MiB

    def get_ours() -> int:
        return sum(len(c) for c in store.get_stream(bucket, "ours.bin")) // MiB

    def get_direct() -> int:
        response = client.get_object(bucket, "direct.bin")
        try:
            return len(response.read()) // MiB
        finally:
            response.close()
            response.release_conn()

    def presign_ours() -> int:
        for _ in range(200):
            store.presign_get(bucket, "ours.bin", timedelta(minutes=5))
        return 200

    def presign_direct() -> int:
        for _ in range(200):
            client.presigned_get_object(bucket, "direct.bin", expires=timedelta(minutes=5))
        return 200

    with console.status("measuring object storage…"):
        report = Report("storage", notes=[f"object size {size // MiB} MiB, best of 3"])
        report.measures += [
            Measure("upload", rate(put_ours), rate(put_direct), "MiB/s", "minio put_object"),
            Measure("download (streamed)", rate(get_ours), rate(get_direct), "MiB/s", "minio get_object"),
            Measure("presign GET", rate(presign_ours), rate(presign_direct), "urls/s", "minio presign"),
        ]
    for key in ("ours.bin", "direct.bin"):
        client.remove_object(bucket, key)
    client.remove_bucket(bucket)
    return report
