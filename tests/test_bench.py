import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_benchmark_prints_its_figures_and_writes_ratios_against_its_baseline(stack, tmp_path):
    env = {
        **os.environ,
        "CELLCOMMONS_BENCH_DATABASE_URL": stack.admin_url.render_as_string(hide_password=False),
        "CELLCOMMONS_BENCH_S3_ENDPOINT": stack.s3_endpoint,
        "CELLCOMMONS_BENCH_S3_ACCESS_KEY": stack.s3_credentials.access_key,
        "CELLCOMMONS_BENCH_S3_SECRET_KEY": stack.s3_credentials.secret_key,
    }
    out = tmp_path / "storage.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "storage", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "bench storage" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["benchmark"] == "storage"
    names = {m["name"] for m in figures["measures"]}
    assert {"upload", "download (streamed)", "presign GET"} <= names
    for m in figures["measures"]:
        assert m["value"] > 0 and m["baseline"] > 0
        assert m["ratio"] == pytest.approx(m["value"] / m["baseline"])


def test_an_unknown_benchmark_is_refused_with_the_list_of_known_ones():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid choice: 'nonsense'" in result.stderr and "storage" in result.stderr
