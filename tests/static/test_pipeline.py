"""The GitLab pipeline (.gitlab-ci.yml): lint, test on Docker, build what compose builds, deploy by hand."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
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
    for command in (
        "ruff check",
        "mypy",
        "vendor.compose-spec",
        "vendor.gitlab-ci",
        '"$promtool" check config',
        "amtool",
    ):
        assert command in text, command
    # Under Prometheus 3's promtool too (compose runs 3), which both CIs fetch before they lint and test.
    assert 'set -- promtool "$EVENTPIPE_TEST_PROMTOOL_3"' in text
    before = PIPELINE[".python"]["before_script"]
    # Assigned on a line of its own: `export X="$(...)"` would take export's status and hide a failed fetch.
    assert 'EVENTPIPE_TEST_PROMTOOL_3="$(python .ci/promtool3.py)"' in before
    assert "export EVENTPIPE_TEST_PROMTOOL_3" in before
    assert 'EVENTPIPE_TEST_PROMTOOL_3="$(python3 .ci/promtool3.py)"' in (compose.REPO / ".ci" / "run").read_text()


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


class Build(NamedTuple):
    context: Path
    dockerfile: Path
    target: str | None
    # Named build context -> what fills it: for compose `service:<name>`, for the job the image it built.
    contexts: dict[str, str]
    pull: bool


def compose_builds() -> dict[str, Build]:
    """image name -> how compose builds it."""
    built = {}
    for definition in compose.compose()["services"].values():
        if "build" in definition:
            image = definition["image"].split("}/", 1)[1].split(":", 1)[0]
            build = definition["build"]
            context = (compose.REPO / build["context"]).resolve()
            dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
            built[image] = Build(context, dockerfile, build.get("target"), build.get("additional_contexts", {}), False)
    return built


def pipeline_builds() -> dict[str, Build]:
    """image name -> how the build job builds it, in the job's order; its images named REGISTRY/<name>:SHA."""
    built = {}
    for line in job("build")["script"]:
        if not line.startswith("docker build "):
            continue
        line = line.replace("$CI_REGISTRY_IMAGE", "REGISTRY").replace("$CI_COMMIT_SHORT_SHA", "SHA")
        words, options, contexts, pull = shlex.split(line)[2:], {}, {}, False
        while words[0].startswith("-"):
            option = words.pop(0)
            if option == "--pull":
                pull = True
            elif option == "--build-context":
                name, value = words.pop(0).split("=", 1)
                contexts[name] = value
            else:
                options[option] = words.pop(0)
        (context,) = words
        image = options["-t"].removeprefix("REGISTRY/").removesuffix(":SHA")
        dockerfile = (compose.REPO / options.get("-f", f"{context}/Dockerfile")).resolve()
        built[image] = Build((compose.REPO / context).resolve(), dockerfile, options.get("--target"), contexts, pull)
    return built


def test_every_image_compose_builds_is_built_and_pushed() -> None:
    built, pipeline = compose_builds(), pipeline_builds()
    assert set(pipeline) == set(built)
    for image, build in built.items():
        assert pipeline[image][:3] == build[:3], f"{image}: compose builds {build[:3]}, the pipeline another"
    text = script("build")
    (pushed,) = re.findall(r"for IMAGE in ([^;]+); do", text)
    assert sorted(pushed.split()) == sorted(built)
    assert 'docker push "$CI_REGISTRY_IMAGE/$IMAGE:$CI_COMMIT_SHORT_SHA"' in text


def test_an_image_built_on_another_is_handed_the_one_this_job_built() -> None:
    # As compose does (service:<name>): the job builds that service's image first and hands it over from
    # its own daemon. A merge request's images are pushed nowhere, so such a build cannot --pull.
    built, pipeline = compose_builds(), pipeline_builds()
    order = list(pipeline)
    services = compose.compose()["services"]
    handed = 0
    for image, build in built.items():
        expected = {}
        for name, value in build.contexts.items():
            base = services[value.removeprefix("service:")]["image"].split("}/", 1)[1].split(":", 1)[0]
            assert order.index(base) < order.index(image), f"{image} is built before {base}, its base"
            expected[name] = f"docker-image://REGISTRY/{base}:SHA"
        assert pipeline[image].contexts == expected, image
        assert pipeline[image].pull == (not expected), f"{image}: --pull {'missing' if not expected else 'set'}"
        handed += len(expected)
    assert handed, "the API's image is built FROM the worker's"


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
    # And the Dockerfiles compose.yaml names (each in its image's folder): the host's copy is the stack as committed.
    needed |= {build.dockerfile.relative_to(compose.REPO).parts[0] for build in compose_builds().values()}
    # Made on the host by scripts/init-secrets.sh, like .env: the pipeline never holds them.
    needed.discard("secrets")
    assert "secrets" not in copied
    assert needed <= copied, f"not copied to the host: {sorted(needed - copied)}"


def test_deploy_keeps_the_hosts_keys_file_in_the_api_folder() -> None:
    # api/ goes to the host with --delete (its Dockerfile, the keys file's example); the keys file compose
    # mounts from there is the host's own, never committed, and must survive every deploy.
    rsync = shlex.split(next(line for line in script("deploy").splitlines() if line.startswith("rsync")))
    assert "api" in rsync and "--delete" in rsync
    assert "--filter=P /api/*.json" in rsync, "a deploy would delete the host's api/keys.json"


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
if [ "$*" = "compose ps -a -q ingest-worker" ]; then
  i=0
  while [ "$i" -lt "$WORKERS" ]; do echo "container-$i"; i=$((i + 1)); done
fi
"""


def deploy(
    tmp_path: Path, workers: int, tls: tuple[str, ...] = ("server.pem", "server-key.pem", "ca.pem")
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """deploy-remote.sh in a copy of the host's directory, with a `docker` that logs its calls and runs
    `workers` ingest-worker containers; (the run, docker's calls)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(DEPLOY_SCRIPT, tmp_path / "scripts" / "deploy-remote.sh")
    (tmp_path / ".env").write_text("X=1\n")
    (tmp_path / "secrets" / "tls").mkdir(parents=True)
    for name in tls:
        (tmp_path / "secrets" / "tls" / name).write_text("x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(log), "WORKERS": str(workers)}
    done = subprocess.run(
        ["sh", str(tmp_path / "scripts" / "deploy-remote.sh"), "registry/eventpipe", "abc123"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(("running", "kept"), [(3, 3), (1, 1), (0, 1)])
def test_a_deploy_keeps_as_many_workers_as_run(tmp_path: Path, running: int, kept: int) -> None:
    # `docker compose up` alone scaled the workers back to one: each replica it removed kept its broker
    # session, and its share of the stream waited there unread until the session expired.
    done, calls = deploy(tmp_path, running)
    assert done.returncode == 0, done.stderr
    assert f"compose up -d --wait --remove-orphans --scale ingest-worker={kept}" in calls


def test_a_deploy_stops_before_anything_when_the_hosts_ca_is_missing(tmp_path: Path) -> None:
    done, calls = deploy(tmp_path, 2, tls=("server.pem", "server-key.pem"))
    assert done.returncode == 1
    assert "secrets/tls/ca.pem is missing: run scripts/init-secrets.sh" in done.stderr
    assert calls == []
