"""`cellcommons demo` on the embedded default stack, run as a newcomer would run it."""

import hashlib
import json
import os
import re
import shlex
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


def _demo_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}


def _start_demo(data_dir, env, timeout=180):
    """A demo in a subprocess, read up to its ready line; (process, output so far)."""
    demo = subprocess.Popen(
        ["cellcommons", "demo", "--data-dir", str(data_dir), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    deadline = time.monotonic() + timeout
    for line in demo.stdout:
        output.append(line)
        if READY_LINE in line or time.monotonic() > deadline:
            break
    if not any(READY_LINE in line for line in output):
        _stop(demo, signal.SIGKILL)
        pytest.fail("".join(output))
    return demo, "".join(output)


def _stop(demo, signum=signal.SIGINT):
    demo.send_signal(signum)
    rest, _ = demo.communicate(timeout=60)
    return rest


def _kill_leftovers(folder):
    """Whatever a failed test leaves under its folder (never anything else)."""
    for proc in _processes_using(folder):
        try:
            os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
        except (ProcessLookupError, psutil.Error):
            pass


def _cellcommons(env, *args):
    return subprocess.run(["cellcommons", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_demo_starts_the_embedded_stack_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = _demo_env()
    data_dir = tmp_path / "demo"
    demo, text = None, ""
    try:
        demo, text = _start_demo(data_dir, env)
        assert "GraphQL API" in text and "object storage (S3)" in text and "demo-token" in text
        assert "export worker" in text and "sync scheduler" in text
        assert _processes_using(data_dir), "the demo should be running PostgreSQL and S3 under its folder"
        _use_the_running_demo(data_dir, env)
        _the_banners_commands_reach_the_demo(text, data_dir, env)
        _a_second_start_on_the_folder_is_refused_and_leaves_the_demo_alone(data_dir, env, demo.pid)
        rest = _stop(demo)
    finally:
        if demo is not None and demo.poll() is None:
            _stop(demo, signal.SIGKILL)
        _kill_leftovers(data_dir)
    assert demo.returncode == 0, rest
    assert "stopped." in rest
    assert "Traceback" not in text + rest
    assert _processes_using(data_dir) == []
    # Its data is kept for the next run.
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert not (data_dir / "demo.json").exists()


def _the_banners_commands_reach_the_demo(text, data_dir, env):
    """The banner lists the portal and prints, ready to paste, what another shell needs for the commands it names."""
    api_url = json.loads((data_dir / "demo.json").read_text())["api_url"]
    assert f"{api_url}/ " in text or f"{api_url}/\n" in text  # the portal
    exports = dict(re.findall(r"^\s*export (CELLCOMMONS_[A-Z0-9_]+)=(.+)$", text, re.MULTILINE))
    assert set(exports) == {"CELLCOMMONS_DATABASE_URL", "CELLCOMMONS_S3_ENDPOINT"}, text
    shell = {**env, **{name: shlex.split(value)[0] for name, value in exports.items()}}
    for command in (["export", "status"], ["sync", "runs"], ["sync", "sources"]):
        done = _cellcommons(shell, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert httpx.get(f"{api_url}/").status_code == 200


def _a_second_start_on_the_folder_is_refused_and_leaves_the_demo_alone(data_dir, env, pid):
    expected = f"error: a demo is already running with data folder {data_dir} (pid {pid})"
    for extra in ([], ["--reset"]):
        done = _cellcommons(env, "demo", "--data-dir", str(data_dir), "--port", "0", *extra)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip() == expected, done.stdout + done.stderr
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    _use_the_running_demo(data_dir, env)  # its database and object storage are still there


@pytest.mark.slow
def test_a_closed_terminal_stops_the_demo_and_a_killed_ones_servers_are_stopped_by_the_next_start(tmp_path):
    env = _demo_env()
    data_dir = tmp_path / "demo"
    try:
        demo, _ = _start_demo(data_dir, env)
        _stop(demo, signal.SIGHUP)  # the terminal was closed
        assert demo.returncode == 0
        assert _processes_using(data_dir) == []

        killed, _ = _start_demo(data_dir, env)
        _stop(killed, signal.SIGKILL)  # no chance to stop its servers
        leftovers = {p.pid for p in _processes_using(data_dir)}
        assert leftovers, "the killed demo's PostgreSQL and S3 server outlive it"
        no_demo = _cellcommons(env, "demo-token", "leiden-scgt", "--data-dir", str(data_dir))
        assert (
            no_demo.returncode == 1
            and no_demo.stderr.strip() == f"error: no demo is running with data folder {data_dir}"
        )

        demo, text = _start_demo(data_dir, env)
        assert "left running by an earlier demo" in text and "PostgreSQL (pid" in text and "S3 server (pid" in text
        assert leftovers.isdisjoint(p.pid for p in _processes_using(data_dir))
        _use_the_running_demo(data_dir, env)
        rest = _stop(demo)
        assert demo.returncode == 0 and "Traceback" not in text + rest, text + rest
        assert _processes_using(data_dir) == []
    finally:
        _kill_leftovers(data_dir)


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
