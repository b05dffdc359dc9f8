"""Every variable that docker-compose.yml, the Dockerfile and deploy/ set for the service is one it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from campaign_manager.settings import Settings
from tests.unit.deployment_files import (
    ROOT,
    compose,
    compose_services_of_our_image,
    deploy_yaml_files,
    dockerfile_env_names,
    dockerfile_stages,
    environment_names,
    yaml_documents,
)

SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
# Read by the interpreter or the shell, not by the service.
RUNTIME_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR"}


def variables_in_manifest(document: dict[str, Any]) -> set[str]:
    """ConfigMap keys, container `env` names and the keys KEDA reads from the service's ConfigMap and Secret."""
    names: set[str] = set()
    kind = document.get("kind")
    if kind == "ConfigMap":
        names |= set(document.get("data") or {})
    if kind == "TriggerAuthentication":
        spec = document.get("spec") or {}
        names |= {ref["key"] for ref in [*spec.get("configMapTargetRef", []), *spec.get("secretTargetRef", [])]}
    pod = (document.get("spec") or {}).get("template", {}).get("spec", {})
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        names |= {variable["name"] for variable in container.get("env", [])}
    return names


def test_compose_sets_only_variables_the_service_reads() -> None:
    services = compose_services_of_our_image()
    assert services, "no compose service builds the service's image"

    for name, service in services.items():
        unknown = environment_names(service.get("environment")) - SETTINGS_VARIABLES
        assert not unknown, f"docker-compose.yml service {name} sets {sorted(unknown)}, which Settings does not read"


def test_compose_runs_the_migration_before_two_workers_of_one_group() -> None:
    services = compose()["services"]
    workers = {name: s for name, s in compose_services_of_our_image().items() if s.get("command") == ["run"]}

    assert services["migrate"]["command"] == ["migrate"]
    assert len(workers) == 2
    assert len({s["environment"]["KAFKA_GROUP_ID"] for s in workers.values()}) == 1
    for worker in workers.values():
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("path", deploy_yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_deploy_files_set_only_variables_the_service_reads(path: Path) -> None:
    for document in yaml_documents(path):
        unknown = variables_in_manifest(document) - SETTINGS_VARIABLES
        assert not unknown, f"{path.relative_to(ROOT)} sets {sorted(unknown)}, which Settings does not read"


def test_the_image_sets_only_variables_the_service_or_python_reads() -> None:
    runtime = dockerfile_stages()[-1]

    unknown = dockerfile_env_names(runtime) - SETTINGS_VARIABLES - RUNTIME_VARIABLES
    assert not unknown, f"the Dockerfile sets {sorted(unknown)}, which Settings does not read"
