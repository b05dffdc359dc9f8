"""Readers for the files that deploy the service: docker-compose.yml, the Dockerfile and the manifests in deploy/."""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAYS = sorted(path.parent for path in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
KUBECTL = shutil.which("kubectl")


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def deploy_yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml_documents(directory / "kustomization.yaml")[0]


def patch_paths(directory: Path) -> list[str]:
    kustomization_ = kustomization(directory)
    return [
        *(patch["path"] for patch in kustomization_.get("patches", []) if "path" in patch),
        *kustomization_.get("patchesStrategicMerge", []),
    ]


def resource_documents(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, as written (patches not applied), following directories."""
    documents: list[dict[str, Any]] = []
    for entry in kustomization(directory).get("resources", []):
        path = directory / entry
        documents.extend(resource_documents(path) if path.is_dir() else yaml_documents(path))
    return documents


@functools.cache
def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` output: the manifests exactly as a cluster would receive them (read-only, cached)."""
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document is not None]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_services_of_our_image() -> dict[str, dict[str, Any]]:
    """The compose services that run the service's image (built from the Dockerfile)."""
    services = compose()["services"]
    return {name: service for name, service in services.items() if "build" in service}


def environment_names(environment: dict[str, Any] | list[str] | None) -> set[str]:
    if environment is None:
        return set()
    if isinstance(environment, dict):
        return set(environment)
    return {item.split("=", 1)[0] for item in environment}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """The build stages, each with its instructions; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = shlex.split(arguments)
            words = [word for word in words if not word.startswith("--")]
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((instruction, arguments.strip()))
    return stages


def dockerfile_env_names(stage: Stage) -> set[str]:
    names = set()
    for arguments in stage.arguments("ENV"):
        for word in shlex.split(arguments):
            names.add(word.split("=", 1)[0])
    return names
