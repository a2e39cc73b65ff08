"""The GitLab pipeline (.gitlab-ci.yml): lint, test on Docker, build what compose builds, deploy by hand."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from tests.support import compose

PIPELINE_FILE = compose.REPO / ".gitlab-ci.yml"
PIPELINE: dict[str, Any] = yaml.safe_load(PIPELINE_FILE.read_text())
DEPLOY_SCRIPT = compose.REPO / "scripts" / "deploy-remote.sh"


def job(name: str) -> dict[str, Any]:
    """A job with its `extends` applied (hashes merged, the job's own keys winning), as GitLab does."""
    definition = PIPELINE[name]
    parents = definition.get("extends", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = merge(merged, job(parent))
    return merge(merged, {k: v for k, v in definition.items() if k != "extends"})


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merge(result[key], value) if both else value
    return result


def script(name: str) -> str:
    definition = job(name)
    return "\n".join([*definition.get("before_script", []), *definition.get("script", [])])


def test_pipeline_is_valid_against_the_gitlab_ci_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(PIPELINE_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_stages_run_in_order() -> None:
    assert PIPELINE["stages"] == ["lint", "test", "build", "deploy"]


LINT_SCRIPT = compose.REPO / ".ci" / "lint"


def test_lint_checks_code_schemas_and_monitoring_configs() -> None:
    assert job("lint")["script"] == ["sh .ci/lint"], "the lint job runs the one lint script"
    text = LINT_SCRIPT.read_text()
    for command in ("ruff check", "mypy", "vendor.compose-spec", "vendor.gitlab-ci", "promtool check config", "amtool"):
        assert command in text, command


def test_ci_run_lints_what_the_lint_job_lints() -> None:
    # One script both call: .ci/run (the machines' CI) cannot lint less than the GitLab lint job.
    commands = [line.strip() for line in (compose.REPO / ".ci" / "run").read_text().splitlines()]
    assert "sh .ci/lint" in commands


def test_tests_run_against_containers_and_fail_without_docker() -> None:
    test = job("test")
    assert any(str(s if isinstance(s, str) else s["name"]).startswith("docker:") for s in test["services"])
    assert "dind" in str(test["services"])
    variables = test["variables"]
    assert variables["EVENTPIPE_TEST_REQUIRE_DOCKER"] == "1"
    assert variables["DOCKER_HOST"].startswith("tcp://docker:")
    assert "python -m pytest" in script("test")


def test_every_image_compose_builds_is_built_and_pushed() -> None:
    built = {}
    for definition in compose.compose()["services"].values():
        if "build" in definition:
            image = definition["image"].split("}/", 1)[1].split(":", 1)[0]
            build = definition["build"]
            built[image] = (
                (compose.REPO / build["context"]).resolve(),
                build.get("dockerfile", "Dockerfile"),
                build.get("target"),
            )
    matrix = job("build")["parallel"]["matrix"]
    pipeline = {
        entry["IMAGE"]: ((compose.REPO / entry["CONTEXT"]).resolve(), entry["DOCKERFILE"], entry.get("TARGET"))
        for entry in matrix
    }
    assert set(pipeline) == set(built)
    for image, (context, dockerfile, target) in built.items():
        assert pipeline[image][0] == context, image
        assert (compose.REPO / pipeline[image][1]).resolve() == (context / dockerfile).resolve(), image
        assert pipeline[image][2] == target, f"{image}: compose builds target {target}, the pipeline another"
    text = script("build")
    assert '${TARGET:+--target "$TARGET"}' in text
    assert 'docker push "$CI_REGISTRY_IMAGE/$IMAGE:$CI_COMMIT_SHORT_SHA"' in text


def test_deploy_is_manual_with_an_environment_and_waits_for_health() -> None:
    deploy = job("deploy")
    assert deploy["stage"] == "deploy"
    assert deploy["environment"]["name"]
    assert all(rule.get("when") == "manual" for rule in deploy["rules"])
    assert "deploy-remote.sh" in script("deploy") and "ssh" in script("deploy")
    remote = DEPLOY_SCRIPT.read_text()
    assert "docker compose pull" in remote
    assert "docker compose up -d --wait" in remote


def test_deploy_copies_everything_compose_mounts_or_builds_from() -> None:
    rsync = next(line for line in script("deploy").splitlines() if line.startswith("rsync"))
    copied = set(rsync.split())
    needed = {"compose.yaml", "scripts"}
    for name in compose.compose()["services"]:
        needed |= {source.relative_to(compose.REPO).parts[0] for source, _ in compose.bind_mounts(name)}
    # Made on the host by scripts/init-secrets.sh, like .env: the pipeline never holds them.
    needed.discard("secrets")
    assert "secrets" not in copied
    assert needed <= copied, f"not copied to the host: {sorted(needed - copied)}"
