"""The Kubernetes manifests in deploy/ hang together: names, labels, ports, probes, secrets and scaling limits.

Each check runs on the base as written. Where `kubectl` is installed, the same checks also run on what
`kubectl kustomize` renders for the base and every overlay, which is what a cluster would receive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from campaign_manager.settings import Settings
from tests.unit.deployment_files import (
    BASE,
    DEPLOY,
    KUBECTL,
    KUSTOMIZATIONS,
    OVERLAYS,
    ROOT,
    deploy_yaml_files,
    kustomization,
    kustomize_build,
    patch_paths,
    resource_documents,
    yaml_documents,
)

SECRET_VARIABLES = {"DATABASE_URL", "KAFKA_SASL_PASSWORD", "API_TOKEN"}
SECRET_NAME = "campaign-manager"
IMAGE_USER = 10001  # USER of the Dockerfile's final stage (tests/unit/test_dockerfile.py holds the two together)
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


class Manifests:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (document,) = self.of_kind(kind)
        return document

    @property
    def config(self) -> dict[str, str]:
        return self.one("ConfigMap")["data"]

    @property
    def pod_templates(self) -> list[dict[str, Any]]:
        return [d["spec"]["template"] for d in self.of_kind("Deployment") + self.of_kind("Job")]

    @property
    def worker(self) -> dict[str, Any]:
        (container,) = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return container


def as_written() -> Manifests:
    return Manifests(resource_documents(BASE))


def rendered(directory: Path) -> Manifests:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the manifests as written are checked instead")
    return Manifests(kustomize_build(directory))


SOURCES = [
    pytest.param(as_written, id="base-as-written"),
    *(
        pytest.param(lambda directory=directory: rendered(directory), id=f"{directory.name}-rendered")
        for directory in KUSTOMIZATIONS
    ),
]


@pytest.fixture(params=SOURCES)
def manifests(request) -> Manifests:
    return request.param()


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return match


# --- the files themselves ---


@pytest.mark.parametrize("path", deploy_yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_parses_and_names_its_kind(path: Path) -> None:
    documents = yaml_documents(path)

    assert documents
    for document in documents:
        assert document.get("apiVersion") and document.get("kind"), path
        if document["kind"] != "Kustomization":
            assert document.get("metadata", {}).get("name"), path


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_resource_and_patch_a_kustomization_names_exists(directory: Path) -> None:
    for entry in kustomization(directory).get("resources", []):
        path = directory / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{directory}: {entry} is missing"
    for entry in patch_paths(directory):
        assert (directory / entry).is_file(), f"{directory}: patch {entry} is missing"


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_every_patch_of_an_overlay_targets_a_resource_it_includes(directory: Path) -> None:
    included = {(d["kind"], d["metadata"]["name"]) for d in resource_documents(directory)}

    for entry in patch_paths(directory):
        for patch in yaml_documents(directory / entry):
            assert (patch["kind"], patch["metadata"]["name"]) in included, f"{entry} patches nothing"


def test_no_secret_value_is_committed() -> None:
    for path in deploy_yaml_files():
        for document in yaml_documents(path):
            assert document.get("kind") != "Secret", f"{path} holds a Secret: reference one instead"
            if document.get("kind") == "ConfigMap":
                assert not SECRET_VARIABLES & set(document.get("data") or {}), f"{path} puts a secret in a ConfigMap"


def test_there_is_an_example_overlay() -> None:
    assert OVERLAYS, "no overlay under deploy/overlays"


# --- how the pieces fit together ---


def test_the_config_map_is_a_valid_configuration(manifests: Manifests) -> None:
    config = manifests.config
    # Stand-ins for what the Secret supplies.
    secrets = {"database_url": "postgresql+asyncpg://u:p@db:5432/campaigns"}
    if config.get("KAFKA_SECURITY_PROTOCOL", "").startswith("SASL_"):
        secrets["kafka_sasl_password"] = "from-the-secret"

    settings = Settings(_env_file=None, **{name.lower(): value for name, value in config.items()}, **secrets)

    assert settings.kafka_bootstrap_servers, "a deployment needs a real broker"
    assert settings.http_host == "0.0.0.0", "the API must listen beyond the pod's loopback"


def test_selectors_of_the_service_and_the_disruption_budget_match_the_worker_pods(manifests: Manifests) -> None:
    deployment = manifests.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]

    assert selector.items() <= pod_labels.items()
    assert manifests.one("Service")["spec"]["selector"].items() <= pod_labels.items()
    assert manifests.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    # The migration Job's pods must not receive traffic or count as workers.
    job_labels = manifests.one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items()


def test_container_service_probe_and_scrape_ports_are_http_port(manifests: Manifests) -> None:
    http_port = int(manifests.config["HTTP_PORT"])
    worker = manifests.worker
    (target_port,) = [p["targetPort"] for p in manifests.one("Service")["spec"]["ports"]]
    annotations = manifests.one("Deployment")["spec"]["template"]["metadata"].get("annotations", {})

    assert [p["containerPort"] for p in worker["ports"]] == [http_port]
    assert container_port(worker, target_port) == http_port
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container_port(worker, worker[probe]["httpGet"]["port"]) == http_port, probe
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == http_port


def test_liveness_and_readiness_use_the_health_endpoints(manifests: Manifests) -> None:
    worker = manifests.worker

    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_every_pod_runs_as_the_images_non_root_user_with_bounded_resources(manifests: Manifests) -> None:
    for template in manifests.pod_templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]


def test_every_pod_reads_the_config_map_and_a_secret_that_is_referenced_not_committed(manifests: Manifests) -> None:
    config_map = manifests.one("ConfigMap")["metadata"]["name"]
    for template in manifests.pod_templates:
        for container in template["spec"]["containers"]:
            sources = container["envFrom"]
            assert {"configMapRef": {"name": config_map}} in sources
            assert {"secretRef": {"name": SECRET_NAME}} in sources
    assert not manifests.of_kind("Secret")


def test_the_migration_job_migrates_with_the_workers_image(manifests: Manifests) -> None:
    job_pod = manifests.one("Job")["spec"]["template"]["spec"]
    (migrate,) = job_pod["containers"]

    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == manifests.worker["image"]
    assert job_pod["restartPolicy"] in {"Never", "OnFailure"}


def test_keda_scales_the_worker_on_its_own_group_and_topics(manifests: Manifests) -> None:
    config = manifests.config
    scaled = manifests.one("ScaledObject")["spec"]
    consumed = {config[name] for name in ("SIGNALS_TOPIC", "POSITION_EVENTS_TOPIC", "MARKET_PRICES_TOPIC")}

    assert scaled["scaleTargetRef"]["name"] == manifests.one("Deployment")["metadata"]["name"]
    assert {trigger["metadata"]["topic"] for trigger in scaled["triggers"]} == consumed
    settings = Settings.model_construct(
        kafka_group_id=config["KAFKA_GROUP_ID"],
        signals_topic=config["SIGNALS_TOPIC"],
    )
    for trigger in scaled["triggers"]:
        metadata = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert metadata["consumerGroup"] == settings.consumer_group_of(metadata["topic"])
        assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]


def test_keda_never_runs_more_workers_than_the_topic_has_partitions(manifests: Manifests) -> None:
    scaled = manifests.one("ScaledObject")["spec"]
    partitions = int(manifests.config.get("TOPIC_PARTITIONS", Settings.model_fields["topic_partitions"].default))

    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    for trigger in scaled["triggers"]:
        assert str(trigger["metadata"].get("allowIdleConsumers", "false")).lower() == "false"


def test_a_rollout_never_adds_a_worker_beyond_the_partitions(manifests: Manifests) -> None:
    rolling_update = manifests.one("Deployment")["spec"]["strategy"]["rollingUpdate"]

    assert rolling_update["maxSurge"] == 0
    assert rolling_update["maxUnavailable"] == 1


def test_keda_reaches_kafka_the_way_the_workers_do(manifests: Manifests) -> None:
    config = manifests.config
    protocol = config.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    for trigger in manifests.one("ScaledObject")["spec"]["triggers"]:
        metadata = trigger["metadata"]

        assert (metadata.get("tls") == "enable") == protocol.endswith("SSL")
        if protocol.startswith("SASL_"):
            assert metadata["sasl"] == KEDA_SASL[config["KAFKA_SASL_MECHANISM"]]
            authentication = manifests.one("TriggerAuthentication")
            assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
            spec = authentication["spec"]
            assert {(r["parameter"], r["name"], r["key"]) for r in spec["secretTargetRef"]} == {
                ("password", SECRET_NAME, "KAFKA_SASL_PASSWORD")
            }
            config_map = manifests.one("ConfigMap")["metadata"]["name"]
            assert {(r["parameter"], r["name"], r["key"]) for r in spec["configMapTargetRef"]} == {
                ("username", config_map, "KAFKA_SASL_USERNAME")
            }
        else:
            assert "sasl" not in metadata
