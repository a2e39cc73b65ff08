"""compose.yaml read as `docker compose up` would: what a user notices if it is wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventpipe.api.keyfile import KeyFileError, parse
from eventpipe.config import Settings
from tests.support import compose, dockerfile

SERVICES: dict[str, dict[str, Any]] = compose.compose()["services"]
# As long as init-secrets.sh makes them: some settings refuse shorter secrets.
DUMMY_SECRETS = {name: f"secret{index}".ljust(32, "x") for index, name in enumerate(compose.required_variables())}


def one_shots() -> set[str]:
    """Services others wait for to *finish* (depends_on: service_completed_successfully)."""
    return {
        name
        for definition in SERVICES.values()
        for name, dependency in (definition.get("depends_on") or {}).items()
        if dependency.get("condition") == "service_completed_successfully"
    }


def long_running() -> list[str]:
    return [name for name in SERVICES if name not in one_shots()]


def dockerfile_of(definition: dict[str, Any]) -> Path:
    build = definition["build"]
    return compose.REPO / build["context"] / build.get("dockerfile", "Dockerfile")


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", compose.COMPOSE_FILE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_project_has_a_fixed_name() -> None:
    # Without it the project, its volumes and its container names follow the checkout's directory name.
    assert compose.compose()["name"] == "eventpipe"


def test_the_whole_stack_is_there() -> None:
    expected = {
        "mosquitto",
        "clickhouse",
        "migrate",
        "ingest-worker",
        "api",
        "mosquitto-exporter",
        "prometheus",
        "alertmanager",
        "grafana",
        "tls",
    }
    assert expected <= set(SERVICES), f"missing: {expected - set(SERVICES)}"
    assert one_shots() == {"migrate", "tls"}


@pytest.mark.parametrize("name", long_running())
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    # `docker compose up --wait` and depends_on: service_healthy mean nothing without one.
    definition = SERVICES[name]
    check = definition.get("healthcheck")
    if check is not None:
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        assert check.get("test"), f"{name}: healthcheck without a test"
        return
    assert "build" in definition, f"{name}: no healthcheck, and its image is not built here to provide one"
    built = dockerfile.instructions(dockerfile_of(definition), definition["build"].get("target"))
    assert "\nHEALTHCHECK " in built, f"{name}: neither compose nor {dockerfile_of(definition)} has a healthcheck"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health_or_completion(name: str) -> None:
    for dependency, spec in (SERVICES[name].get("depends_on") or {}).items():
        assert isinstance(spec, dict), f"{name} -> {dependency}: a bare list only waits for the container to start"
        expected = "service_completed_successfully" if dependency in one_shots() else "service_healthy"
        assert spec.get("condition") == expected, f"{name} -> {dependency}: condition should be {expected}"


def test_the_worker_and_the_api_start_only_after_the_migration() -> None:
    for name in ("ingest-worker", "api"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert SERVICES["ingest-worker"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_cpu_and_memory_limits(name: str) -> None:
    limits = SERVICES[name].get("deploy", {}).get("resources", {}).get("limits", {})
    assert limits.get("cpus") and limits.get("memory"), f"{name}: deploy.resources.limits.cpus and .memory"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_volumes_are_named_or_read_only_config_from_the_repository(name: str) -> None:
    declared = set(compose.compose().get("volumes") or {})
    for volume in SERVICES[name].get("volumes", []):
        anonymous = ":" not in volume if isinstance(volume, str) else "source" not in volume
        assert not anonymous, f"{name}: {volume!r} is an anonymous volume"
    for source, _target, options in compose.volumes(name):
        if source.startswith("./secrets/"):
            # Made on the host by scripts/init-secrets.sh (or put there by the operator), never committed.
            assert options == ["ro"], f"{name}: {source} must be mounted read-only"
            continue
        if source.startswith("./"):
            assert (compose.REPO / source).exists(), f"{name}: {source} is not in the repository"
            assert options == ["ro"], f"{name}: config {source} must be mounted read-only"
        else:
            assert source in declared, f"{name}: volume {source} is not declared under top-level volumes"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_published_ports_listen_on_localhost_by_default(name: str) -> None:
    for port in SERVICES[name].get("ports", []):
        resolved = compose.interpolate(str(port), DUMMY_SECRETS)
        host, _host_port, _container_port = resolved.rsplit(":", 2)
        assert host == "127.0.0.1", f"{name}: {port} publishes on {host or 'every interface'}"


def test_the_worker_publishes_no_port_so_that_it_can_be_scaled() -> None:
    # Replicas of one service cannot share a host port; Prometheus finds them through DNS instead.
    worker = SERVICES["ingest-worker"]
    assert "ports" not in worker
    assert "container_name" not in worker


def test_the_worker_keeps_the_shared_subscription_and_names_sessions_per_replica() -> None:
    env = compose.environment("ingest-worker", DUMMY_SECRETS)
    assert env.get("EVENTPIPE_MQTT_SHARE_GROUP"), "without a share group every replica would store every event"
    # A fixed client id would make the replicas take over each other's session; the image names them.
    assert "EVENTPIPE_MQTT_CLIENT_ID" not in env
    assert dockerfile_of(SERVICES["ingest-worker"]) == dockerfile.WORKER_DOCKERFILE
    image = dockerfile.instructions(dockerfile_of(SERVICES["ingest-worker"]))
    assert "EVENTPIPE_MQTT_CLIENT_ID_FROM_DNS=true" in image
    assert env.get("EVENTPIPE_MQTT_CLIENT_ID_FROM_DNS", "true") == "true"


def test_the_app_services_build_the_dockerfiles_of_their_folders() -> None:
    # The worker's image builds eventpipe; the API's is FROM it, by a name compose must fill with the
    # image it builds for a service (api/Dockerfile pulls no image of that name).
    for name, path in (("migrate", "ingest-worker"), ("ingest-worker", "ingest-worker"), ("api", "api")):
        assert SERVICES[name]["build"]["context"] == ".", f"{name}: the root .dockerignore applies to `.` only"
        assert dockerfile_of(SERVICES[name]) == compose.REPO / path / "Dockerfile", name
        assert "target" not in SERVICES[name]["build"], f"{name}: the image is its Dockerfile's last stage"
    given = SERVICES["api"]["build"]["additional_contexts"]
    assert set(given) == set(dockerfile.NAMED_CONTEXTS[dockerfile.API_DOCKERFILE])
    for context, value in given.items():
        service = value.removeprefix("service:")
        assert value.startswith("service:"), f"api: {context}={value} is not an image compose builds"
        assert dockerfile_of(SERVICES[service]) == dockerfile.NAMED_CONTEXTS[dockerfile.API_DOCKERFILE][context]
        assert SERVICES[service]["image"] == SERVICES["migrate"]["image"], "migrate runs the worker image"


def test_the_api_reads_its_keys_file_from_the_api_folder_read_only() -> None:
    # The folder, not the file: `mv` of a new version over the old one is seen; a file mount keeps the old inode.
    mounts = {target: (source, options) for source, target, *options in map(volume_parts, SERVICES["api"]["volumes"])}
    assert mounts["/etc/eventpipe/api"] == ("./api", ["ro"])
    unset = compose.environment("api", DUMMY_SECRETS)["EVENTPIPE_API_KEYS_FILE"]
    assert unset == "", "no keys file unless .env names one"
    chosen = compose.environment("api", {**DUMMY_SECRETS, "EVENTPIPE_API_KEYS_FILE": "/etc/eventpipe/api/keys.json"})
    assert chosen["EVENTPIPE_API_KEYS_FILE"] == "/etc/eventpipe/api/keys.json"
    example = (compose.REPO / ".env.example").read_text()
    assert "# EVENTPIPE_API_KEYS_FILE=/etc/eventpipe/api/keys.json" in example


def volume_parts(volume: str) -> list[str]:
    return volume.split(":")


APP_SERVICES = ("migrate", "ingest-worker", "api")


def eventpipe_variables() -> set[str]:
    names = {key for name in SERVICES for key in compose.environment(name, DUMMY_SECRETS)}
    names = {name for name in names if name.startswith("EVENTPIPE_")}
    names |= {name for name, _, _ in compose.references() if name.startswith("EVENTPIPE_")}
    for path in dockerfile.DOCKERFILES:
        names |= set(re.findall(r"\b(EVENTPIPE_[A-Z0-9_]+)=", path.read_text()))
    return names


def test_every_eventpipe_variable_compose_sets_is_a_setting() -> None:
    # A misspelt EVENTPIPE_ variable is silently ignored by the settings (extra="ignore").
    known = {f"EVENTPIPE_{field.upper()}" for field in Settings.model_fields}
    unknown = eventpipe_variables() - known
    assert not unknown, f"not read by eventpipe.config.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_settings_accept_what_compose_passes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EVENTPIPE_"):
            monkeypatch.delenv(key)
    for key, value in compose.environment(name, DUMMY_SECRETS).items():
        monkeypatch.setenv(key, value)
    dsn = Settings().clickhouse_dsn
    assert dsn.startswith("http://") and dsn.endswith("@clickhouse:8123/eventpipe")


def test_containers_listen_on_every_interface() -> None:
    # 127.0.0.1 inside a container is unreachable from Prometheus and from the published port.
    api = compose.environment("api", DUMMY_SECRETS)
    worker = compose.environment("ingest-worker", DUMMY_SECRETS)
    assert api["EVENTPIPE_API_HOST"] == "0.0.0.0"
    assert worker["EVENTPIPE_METRICS_HOST"] == "0.0.0.0"


def test_app_containers_do_not_run_with_extra_privileges() -> None:
    for name in (*APP_SERVICES, "mosquitto-exporter"):
        definition = SERVICES[name]
        assert definition.get("read_only") is True, name
        assert definition.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in definition.get("security_opt", []), name


# What the contract parses with: a replay in the API must parse as the worker did.
CONTRACT_SETTINGS = ("max_payload_bytes", "max_depth", "max_future_skew_s", "max_past_days", "envelope_keys")


def test_the_api_replays_dead_letters_under_the_settings_the_worker_parses_with() -> None:
    worker = compose.environment("ingest-worker", DUMMY_SECRETS)
    api = compose.environment("api", DUMMY_SECRETS)
    for name in CONTRACT_SETTINGS:
        variable = f"EVENTPIPE_{name.upper()}"
        assert worker.get(variable) == api.get(variable), f"{variable}: the worker and the API parse differently"


def test_the_keys_file_example_shows_the_shape_the_api_reads_and_admits_no_key_as_it_is() -> None:
    example = (compose.REPO / "api" / "keys.example.json").read_text()
    with pytest.raises(KeyFileError, match=r"keys\[0\]\.sha256"):
        parse(example.encode())  # mounted by mistake, it stops the API, naming the line to fill in
    keys = json.loads(example)
    for number, key in enumerate(keys["keys"]):
        key["sha256"] = f"{number:064x}"
    entries = parse(json.dumps(keys).encode())
    assert len(entries) == 2 and any(entry.grant.admin for entry in entries)
