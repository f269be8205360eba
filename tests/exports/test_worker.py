"""Workers that poll: `cellcommons worker` as a process of its own (runs a queued job, stops cleanly on
SIGTERM) and the background worker the demo runs beside its API; `cellcommons export status` shows the job."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

from tests.exports.test_refusals import request
from tests.processes import cli_environment

from cellcommons.exports.models import ExportStatus
from cellcommons.exports.worker import BackgroundWorker


async def finished(world, export_id, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = await world.job(export_id)
        if job.status in {ExportStatus.succeeded, ExportStatus.failed}:
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"export {export_id} still {job.status} after {seconds} s")


async def test_the_worker_command_runs_queued_exports_and_stops_on_sigterm(world):
    job = await request(world, "lowlands")
    env = cli_environment(world.settings)
    worker = await asyncio.to_thread(
        subprocess.Popen, ["cellcommons", "worker", "--interval", "0.2"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        done = await finished(world, job.id)
        assert done.status is ExportStatus.succeeded
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(worker.communicate, timeout=30)
    assert worker.returncode == 0, err
    assert f"export {job.id}: succeeded" in out

    status = await asyncio.to_thread(
        subprocess.run, ["cellcommons", "export", "status", str(job.id)], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0
    assert status.stdout.startswith(f"export {job.id}: succeeded — {done.rows_written:,} rows")
    assert done.sha256 in status.stdout


async def test_the_demos_background_worker_runs_jobs_until_stopped(world):
    background = BackgroundWorker(world.settings, interval=0.1).start()
    try:
        job = await request(world, "stroma", agreement="stroma")
        assert (await finished(world, job.id)).status is ExportStatus.succeeded
    finally:
        await asyncio.to_thread(background.stop, 15)
    assert not background.running
