"""The Dockerfile, read with dockerfile-parse (no Docker engine here): multi-stage, wheel-only, non-root, checked."""

from __future__ import annotations

import json

import pytest
from dockerfile_parse import DockerfileParser
from tests.deploy.manifests import API_PORT, ROOT, parses


@pytest.fixture(scope="module")
def dockerfile() -> list[dict]:
    with (ROOT / "Dockerfile").open("rb") as file:
        return DockerfileParser(fileobj=file).structure


def _stages(dockerfile: list[dict]) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for instruction in dockerfile:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:  # global ARGs and comments come before the first FROM
            stages[-1].append(instruction)
    return stages


def _last(stage: list[dict], name: str) -> str | None:
    values = [i["value"] for i in stage if i["instruction"] == name]
    return values[-1] if values else None


def test_it_builds_the_wheel_in_one_stage_and_runs_from_a_slim_one(dockerfile):
    stages = _stages(dockerfile)
    assert len(stages) >= 2
    froms = [_last(stage, "FROM") for stage in stages]
    assert all("-slim" in base for base in froms), froms
    build_commands = " ".join(i["value"] for i in stages[0] if i["instruction"] == "RUN")
    assert "build --wheel" in build_commands
    final = stages[-1]
    copied = [i["value"] for i in final if i["instruction"] == "COPY"]
    # The runtime gets only what an earlier stage installed, never the source tree.
    assert copied and all(value.startswith("--from=") for value in copied), copied
    installs = " ".join(i["value"] for s in stages[1:] for i in s if i["instruction"] == "RUN")
    assert ".whl" in installs and "-e " not in installs


def test_the_runtime_runs_as_a_numeric_non_root_user(dockerfile):
    user = _last(_stages(dockerfile)[-1], "USER")
    assert user is not None
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_the_healthcheck_asks_the_api_on_its_port(dockerfile):
    final = _stages(dockerfile)[-1]
    check = _last(final, "HEALTHCHECK")
    assert check is not None and f"127.0.0.1:{API_PORT}/healthz" in check
    assert _last(final, "EXPOSE") == str(API_PORT)


def test_the_default_command_is_a_serve_the_cli_accepts(dockerfile):
    final = _stages(dockerfile)[-1]
    entrypoint = json.loads(_last(final, "ENTRYPOINT"))
    command = json.loads(_last(final, "CMD"))
    assert entrypoint == ["cellcommons"]
    assert parses(command)
    assert command[command.index("--port") + 1] == str(API_PORT)


def test_the_build_context_holds_only_what_the_wheel_needs():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!platform/", "!connectors/"} <= set(rules)
