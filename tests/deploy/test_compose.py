"""deploy/compose.yaml, checked without a Docker engine: the Compose specification's JSON schema (vendored in
deploy/schemas/ from the check-jsonschema package), the CLI's parser, Settings, and the Keycloak realms."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml
from tests.deploy.manifests import (
    API_PORT,
    DEPLOY,
    compose,
    env_example,
    interpolate,
    option_value,
    parses,
    settings_fields,
)

from cellcommons.auth.dev_idp import DEMO_USERS, role_mapping
from cellcommons.auth.dev_idp.provider import PORTAL_CLIENT_ID
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.settings import load_settings

PLATFORM_SERVICES = ("migrate", "api", "worker", "scheduler")


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def rendered() -> dict:
    """The file as compose sees it with .env.example's values substituted."""
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), env_example()))


def test_compose_file_follows_the_compose_specification(spec):
    jsonschema.Draft202012Validator.check_schema(spec)
    errors = sorted(jsonschema.Draft202012Validator(spec).iter_errors(compose()), key=lambda e: e.path)
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_schema_check_catches_a_broken_file(spec):
    broken = compose()
    broken["services"]["api"]["healthcheck"]["interval"] = {"seconds": 10}
    broken["services"]["api"]["restart_policy"] = "always"
    assert len(list(jsonschema.Draft202012Validator(spec).iter_errors(broken))) >= 2


def test_every_service_the_platform_needs_is_there_with_volumes_for_data():
    services = compose()["services"]
    assert {"api", "worker", "scheduler", "postgres", "minio", "keycloak", "migrate"} <= set(services)
    volumes = set(compose()["volumes"])
    assert any(v.split(":")[0] in volumes for v in services["postgres"]["volumes"])
    assert any(v.split(":")[0] in volumes for v in services["minio"]["volumes"])
    for name in ("postgres", "minio", "keycloak", "api"):
        assert "test" in services[name]["healthcheck"], name


def test_migrations_run_before_the_platform_starts():
    services = compose()["services"]
    for name in ("api", "worker", "scheduler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", PLATFORM_SERVICES)
def test_commands_are_ones_the_cli_accepts(rendered, service):
    command = rendered["services"][service]["command"]
    assert parses(command)


def test_the_api_serves_several_workers_on_the_published_port(rendered):
    api = rendered["services"]["api"]
    command = api["command"]
    assert int(option_value(command, "--workers")) > 1
    assert option_value(command, "--host") == "0.0.0.0"
    assert option_value(command, "--port") == str(API_PORT)
    assert f"{API_PORT}:{API_PORT}" in api["ports"]
    assert f"127.0.0.1:{API_PORT}/readyz" in " ".join(api["healthcheck"]["test"])


def test_the_platform_environment_is_valid_production_configuration(rendered):
    environment = rendered["services"]["api"]["environment"]
    unknown = {k for k in environment if k.startswith("CELLCOMMONS_")} - settings_fields()
    assert not unknown, f"not settings: {unknown}"
    overrides = {k.removeprefix("CELLCOMMONS_").lower(): v for k, v in environment.items() if k in settings_fields()}
    settings = load_settings(_env_file=None, **overrides)  # raises SettingsError naming every problem
    assert settings.environment.value == "production"
    assert settings.app_url.username == "cellcommons_app" != settings.owner_url.username


def test_every_variable_compose_requires_is_in_env_example():
    required = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / "compose.yaml").read_text()))
    assert required <= set(env_example()), required - set(env_example())


@pytest.mark.parametrize("institution", [i["slug"] for i in INSTITUTIONS])
def test_each_partner_has_a_keycloak_realm_with_the_claims_the_platform_maps(institution):
    realm = json.loads((DEPLOY / "keycloak" / f"{institution}-realm.json").read_text())
    assert realm["realm"] == institution
    mapping = role_mapping(institution)
    client = next(c for c in realm["clients"] if c["clientId"] == PORTAL_CLIENT_ID)
    assert client["publicClient"] and client["attributes"]["pkce.code.challenge.method"] == "S256"
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    assert mappers["oidc-audience-mapper"]["included.custom.audience"] == "cellcommons"
    if mapping.claim_path == "groups":
        assert mappers["oidc-group-membership-mapper"]["claim.name"] == "groups"
        assert mappers["oidc-group-membership-mapper"]["full.path"] == "false"
        defined = {g["name"] for g in realm["groups"]}
    else:
        assert mapping.claim_path == "realm_access.roles"  # Keycloak's own place for realm roles
        defined = {r["name"] for r in realm["roles"]["realm"]}
    assert set(mapping.values) == defined
    users = {u["username"]: u for u in realm["users"]}
    for demo in DEMO_USERS:
        user = users[demo.username]
        held = {g.strip("/") for g in user.get("groups", [])} | set(user.get("realmRoles", []))
        assert {mapping.values[v] for v in held if v in mapping.values} == set(demo.roles)
        assert "credentials" not in user  # no passwords in Git
