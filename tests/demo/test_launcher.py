"""`cellcommons demo` on the embedded default stack, run as a newcomer would run it."""

import os
import signal
import subprocess
import time

import psutil
import pytest

from cellcommons.demo.launcher import READY_LINE


def _processes_using(folder):
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.slow
def test_demo_starts_the_embedded_stack_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    data_dir = tmp_path / "demo"
    demo = subprocess.Popen(
        ["cellcommons", "demo", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    deadline = time.monotonic() + 120
    try:
        for line in demo.stdout:
            output.append(line)
            if READY_LINE in line or time.monotonic() > deadline:
                break
        assert any(READY_LINE in line for line in output), "".join(output)
        text = "".join(output)
        assert "PostgreSQL (application)" in text and "object storage (S3)" in text
        assert _processes_using(data_dir), "the demo should be running PostgreSQL and S3 under its folder"
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    assert "stopped." in rest
    assert "Traceback" not in "".join(output) + rest
    assert _processes_using(data_dir) == []
    # Its data is kept for the next run.
    assert (data_dir / "postgres" / "PG_VERSION").exists()
