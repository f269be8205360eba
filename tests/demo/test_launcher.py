"""`cellcommons demo` on the embedded default stack, run as a newcomer would run it."""

import hashlib
import json
import os
import signal
import subprocess
import time

import httpx
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
        ["cellcommons", "demo", "--data-dir", str(data_dir), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    deadline = time.monotonic() + 180
    try:
        for line in demo.stdout:
            output.append(line)
            if READY_LINE in line or time.monotonic() > deadline:
                break
        assert any(READY_LINE in line for line in output), "".join(output)
        text = "".join(output)
        assert "GraphQL API" in text and "object storage (S3)" in text and "demo-token" in text
        assert "export worker" in text and "sync scheduler" in text
        assert _processes_using(data_dir), "the demo should be running PostgreSQL and S3 under its folder"
        _use_the_running_demo(data_dir, env)
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    assert "stopped." in rest
    assert "Traceback" not in "".join(output) + rest
    assert _processes_using(data_dir) == []
    # Its data is kept for the next run.
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert not (data_dir / "demo.json").exists()


def _use_the_running_demo(data_dir, env):
    """What a newcomer does next: get a demo token, ask the GraphQL API for datasets, the steward's queue and a
    file, and open the portal."""
    api_url = json.loads((data_dir / "demo.json").read_text())["api_url"]
    assert httpx.get(f"{api_url}/healthz").json() == {"status": "ok"}
    token = subprocess.run(
        ["cellcommons", "demo-token", "leiden-scgt", "stella", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    query = "{ viewer { institution roles } datasets(first: 5) { totalCount } }"
    answer = httpx.post(f"{api_url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})
    data = answer.json()["data"]
    assert data["viewer"] == {"institution": "leiden-scgt", "roles": ["reader", "steward"]}
    assert data["datasets"]["totalCount"] > 10
    _a_steward_has_requests_to_decide_and_files_to_download(api_url, {"Authorization": f"Bearer {token}"})
    assert "GraphiQL" in httpx.get(f"{api_url}/graphql", headers={"Accept": "text/html"}).text
    sign_in = httpx.get(f"{api_url}/sign-in")  # the portal, with every demo institution to sign in with
    assert sign_in.status_code == 200 and "leiden-scgt" in sign_in.text and "maple-ccrm" in sign_in.text


STEWARD_VIEW = """{
  accessRequestQueue(first: 10) { totalCount nodes { status requesterInstitution { slug } } }
  datasets(first: 1, filter: {institution: {eq: "leiden-scgt"}}) {
    nodes { latestVersion { distributions { id sha256 sizeBytes } } }
  }
}"""


def _a_steward_has_requests_to_decide_and_files_to_download(api_url, auth):
    data = httpx.post(f"{api_url}/graphql", json={"query": STEWARD_VIEW}, headers=auth).json()["data"]
    queue = data["accessRequestQueue"]
    assert queue["totalCount"] > 0
    assert {n["status"] for n in queue["nodes"]} == {"submitted"}
    assert "leiden-scgt" not in {n["requesterInstitution"]["slug"] for n in queue["nodes"]}
    (file,) = data["datasets"]["nodes"][0]["latestVersion"]["distributions"]
    mutation = "mutation($id: ID!) { downloadUrl(distributionId: $id) { url } }"
    link = httpx.post(f"{api_url}/graphql", json={"query": mutation, "variables": {"id": file["id"]}}, headers=auth)
    body = httpx.get(link.json()["data"]["downloadUrl"]["url"]).content
    assert len(body) == file["sizeBytes"] and hashlib.sha256(body).hexdigest() == file["sha256"]
