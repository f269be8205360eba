"""Workers that poll: `cellcommons worker` as a process of its own (runs a queued job, stops cleanly on
SIGTERM) and the background worker the demo runs beside its API; `cellcommons export status` shows the job."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import httpx
from tests.exports.conftest import request
from tests.processes import cli_environment

from cellcommons.demo.stack import free_port
from cellcommons.exports.models import ExportStatus
from cellcommons.exports.worker import background_worker


async def test_the_worker_command_runs_queued_exports_and_stops_on_sigterm(world):
    job = await request(world, "lowlands")
    env = cli_environment(world.settings)
    port = free_port()
    worker = await asyncio.to_thread(
        subprocess.Popen, ["cellcommons", "worker", "--interval", "0.2", "--metrics-port", str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        done = await world.finished(job.id)
        assert done.status is ExportStatus.succeeded
        async with httpx.AsyncClient() as http:  # counted after its commit, so it is there once the job is
            scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'cellcommons_exports_total{status="succeeded"} 1.0' in scraped
        assert f"cellcommons_export_rows_total {float(done.rows_written)}" in scraped
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
    background = background_worker(world.settings, interval=0.1).start()
    try:
        job = await request(world, "stroma", agreement="stroma")
        assert (await world.finished(job.id)).status is ExportStatus.succeeded
    finally:
        await asyncio.to_thread(background.stop, 15)
    assert not background.running
