"""The image runs as a non-root user, reports its health and carries no build tools."""

from __future__ import annotations

import json
import re

from tests.unit.deployment_files import BASE, dockerfile_stages, yaml_documents

COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|python3?-dev|libpq-dev)\b")
PACKAGE_INSTALLS = re.compile(r"apt-get install|apt install|apk add|pip install|uv pip install")
SECRETS = {"DATABASE_URL", "KAFKA_SASL_PASSWORD", "API_TOKEN"}


def runtime_stage():
    return dockerfile_stages()[-1]


def test_the_image_is_built_in_two_stages_on_the_same_base() -> None:
    builder, runtime = dockerfile_stages()

    assert builder.name == "builder"
    # The venv copied from the builder points at the builder's interpreter.
    assert builder.base == runtime.base
    assert any("--from=builder" in copy and "/opt/venv" in copy for copy in runtime.arguments("COPY"))


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    (user,) = runtime_stage().arguments("USER")
    uid, _, gid = user.partition(":")

    # Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_the_kubernetes_pods_run_as_the_images_user() -> None:
    (user,) = runtime_stage().arguments("USER")
    uid = int(user.partition(":")[0])
    (deployment,) = [d for d in yaml_documents(BASE / "deployment.yaml") if d["kind"] == "Deployment"]

    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_the_final_stage_has_a_healthcheck_on_the_liveness_endpoint() -> None:
    (healthcheck,) = runtime_stage().arguments("HEALTHCHECK")

    assert "CMD" in healthcheck
    assert "/healthz" in healthcheck
    assert "HTTP_PORT" in healthcheck  # follows the port the service is told to listen on


def test_the_final_stage_installs_nothing_and_so_no_compiler() -> None:
    for command in runtime_stage().arguments("RUN"):
        assert not PACKAGE_INSTALLS.search(command), command
        assert not COMPILERS.search(command), command


def test_the_image_bakes_in_no_secret_and_starts_the_service() -> None:
    runtime = runtime_stage()

    assert not any(name in arguments for arguments in runtime.arguments("ENV") for name in SECRETS)
    assert json.loads(runtime.arguments("ENTRYPOINT")[-1]) == ["campaign-manager"]
    assert json.loads(runtime.arguments("CMD")[-1]) == ["run"]
