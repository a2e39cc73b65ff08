"""Secrets: none has a default, compose refuses to start without them, one command creates them."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import compose

ENV_EXAMPLE = compose.REPO / ".env.example"
# Required but not secret: where the alerts' runbook links point, which init-secrets.sh sets to this checkout's.
LINKS = {"EVENTPIPE_RUNBOOK_URL"}
SCRIPT = compose.REPO / "scripts" / "init-secrets.sh"


def example_required() -> set[str]:
    """Variables .env.example lists as required: `NAME=` with nothing after it, above the optional block.

    Below its heading a reader takes every line for an optional default, so a required one there is
    left empty by whoever writes .env by hand (the cursor secret was).
    """
    required, _, _ = ENV_EXAMPLE.read_text().partition("# ---- Optional")
    return set(re.findall(r"(?m)^([A-Z][A-Z0-9_]*)=$", required))


def example_documented() -> set[str]:
    """Every variable .env.example mentions, set or commented out."""
    return set(re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text()))


def read_env(path: Path) -> dict[str, str]:
    pairs = re.findall(r"(?m)^([A-Z][A-Z0-9_]*)=(.*)$", path.read_text())
    return dict(pairs)


def test_every_reference_either_is_required_or_has_a_default() -> None:
    # A bare ${VAR} silently becomes "" when VAR is unset: a password-less user, an empty key.
    bare = sorted({name for name, operator, _ in compose.references() if operator is None})
    assert not bare, f"use ${{VAR:?...}} or ${{VAR:-default}}: {bare}"


def test_every_secret_is_required_and_none_has_a_default() -> None:
    secret = re.compile(r"PASSWORD|KEY|TOKEN|SECRET")
    for name, operator, _ in compose.references():
        # A *_FILE variable names where something is (a path), not a secret.
        if secret.search(name) and not name.endswith("_FILE"):
            assert operator == ":?", f"{name} must be ${{{name}:?...}}: compose refuses to start without it"


def test_no_password_is_written_in_the_compose_file() -> None:
    for service, definition in compose.compose()["services"].items():
        for key, value in (definition.get("environment") or {}).items():
            # A *_FILE variable names where a secret is (a path), not the secret.
            if re.search(r"PASS|SECRET|KEY", key) and not key.endswith("_FILE"):
                assert "${" in str(value), f"{service}: {key} has a literal value"


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    used = {name for name, _, _ in compose.references()}
    assert used <= example_documented(), f"not in .env.example: {sorted(used - example_documented())}"


def test_env_example_lists_exactly_the_required_secrets_as_empty() -> None:
    # Empty lines are what init-secrets.sh fills: one too many is a secret nobody reads, one too few
    # a first start that fails.
    assert example_required() == set(compose.required_variables())


def test_compose_refuses_to_start_without_a_secret() -> None:
    env = {name: "x" for name in compose.required_variables()}
    for name in compose.required_variables():
        partial = {key: value for key, value in env.items() if key != name}
        with pytest.raises(KeyError, match=name):
            for text in compose.strings(compose.compose()):
                compose.interpolate(text, partial)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts")
    shutil.copy(ENV_EXAMPLE, tmp_path)
    return tmp_path


def init_secrets(checkout: Path) -> str:
    done = subprocess.run(["sh", str(checkout / "scripts" / "init-secrets.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_init_secrets_creates_every_required_secret(checkout: Path) -> None:
    init_secrets(checkout)
    env = read_env(checkout / ".env")
    values = [env.get(name, "") for name in compose.required_variables() if name not in LINKS]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in values), env
    assert len(set(values)) == len(values), "two secrets got the same value"
    assert stat.S_IMODE((checkout / ".env").stat().st_mode) == 0o600
    for text in compose.strings(compose.compose()):
        compose.interpolate(text, env)  # raises KeyError if compose would refuse


def test_init_secrets_links_the_alerts_to_this_checkouts_runbooks_unless_set(checkout: Path) -> None:
    init_secrets(checkout)
    assert read_env(checkout / ".env")["EVENTPIPE_RUNBOOK_URL"] == (checkout / "docs" / "runbooks.md").as_uri()
    chosen = "https://gitlab.example.com/team/eventpipe/-/blob/main/docs/runbooks.md"
    env_file = checkout / ".env"
    text = re.sub(r"(?m)^EVENTPIPE_RUNBOOK_URL=.*$", f"EVENTPIPE_RUNBOOK_URL={chosen}", env_file.read_text())
    env_file.write_text(text)
    init_secrets(checkout)
    assert read_env(env_file)["EVENTPIPE_RUNBOOK_URL"] == chosen


def test_init_secrets_never_changes_a_secret_already_set(checkout: Path) -> None:
    init_secrets(checkout)
    first = read_env(checkout / ".env")
    assert "nothing changed" in init_secrets(checkout)
    assert read_env(checkout / ".env") == first


def test_init_secrets_fills_a_secret_that_is_missing_or_emptied(checkout: Path) -> None:
    init_secrets(checkout)
    env_file = checkout / ".env"
    before = read_env(env_file)
    text = env_file.read_text().replace(f"GRAFANA_ADMIN_PASSWORD={before['GRAFANA_ADMIN_PASSWORD']}", "")
    text = text.replace(f"EVENTPIPE_API_KEYS={before['EVENTPIPE_API_KEYS']}", "EVENTPIPE_API_KEYS=")
    env_file.write_text(text)
    init_secrets(checkout)
    after = read_env(env_file)
    assert after["GRAFANA_ADMIN_PASSWORD"] and after["EVENTPIPE_API_KEYS"]
    assert after["MQTT_INGEST_PASSWORD"] == before["MQTT_INGEST_PASSWORD"]


def test_the_secrets_file_is_never_committed() -> None:
    ignored = (compose.REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
