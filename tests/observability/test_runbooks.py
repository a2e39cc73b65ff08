"""Runbook links that open, in compose: Prometheus' entrypoint links every alert to <EVENTPIPE_RUNBOOK_URL>#<alert>.

The rule files keep `docs/runbooks.md#<alert>` (their promtool tests expect it, tests/observability/test_rules.py
checks each resolves); what the container loads is the entrypoint's copy, run here as the container runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import compose
from tests.support import observability as obs

ENTRYPOINT = compose.REPO / "prometheus" / "entrypoint.sh"
URL = "https://gitlab.example.com/team/eventpipe/-/blob/0123abc/docs/runbooks.md"


def run_entrypoint(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint on the repository's rules, with a script that records its arguments standing in for
    Prometheus."""
    binary = tmp_path / "prometheus"
    binary.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "arguments"}\n')
    binary.chmod(0o755)
    variables = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    variables |= {
        "PROMETHEUS_RULES_SOURCE": str(obs.RULES),
        "PROMETHEUS_RULES": str(tmp_path / "rules"),
        "PROMETHEUS_BINARY": str(binary),
        "EVENTPIPE_RUNBOOK_URL": url,
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "--config.file=/etc/prometheus/prometheus.yml"],
        env=variables,
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_alert_prometheus_loads_links_to_its_runbook_heading(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, URL)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "arguments").read_text() == "--config.file=/etc/prometheus/prometheus.yml\n"
    rendered = sorted((tmp_path / "rules").glob("*.yml"))
    assert [path.name for path in rendered] == [path.name for path in obs.rule_files()]
    checked = subprocess.run(
        [obs.tool("promtool", "prometheus"), "check", "rules", *map(str, rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    anchors = obs.runbook_anchors()
    alerts = [
        rule
        for path in rendered
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) == len(obs.alert_rules())
    for rule in alerts:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == URL, f"{rule['alert']}: {rule['annotations']['runbook_url']}"
        assert anchors.get(anchor) == rule["alert"], f"{rule['alert']}: docs/runbooks.md has no heading #{anchor}"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "docs/runbooks.md",
        "https://x/runbooks.md#top",
        "https://x/run books.md",
        "https://x/a|b",
        'https://x/"',
        # The rules are Go templates: "{{" in a link made Prometheus load none of them.
        "https://x/{{branch}}/runbooks.md",
        "https://x/a}b",
    ],
)
def test_a_url_that_would_not_open_or_would_break_the_rules_stops_it(tmp_path: Path, url: str) -> None:
    done = run_entrypoint(tmp_path, url)
    assert done.returncode == 1
    assert "EVENTPIPE_RUNBOOK_URL" in done.stderr
    assert not (tmp_path / "arguments").exists(), "Prometheus started with links that do not open"


def test_compose_gives_prometheus_the_url_from_env_and_loads_the_copy() -> None:
    service = compose.service("prometheus")
    assert service["entrypoint"] == ["/bin/sh", "/etc/prometheus/entrypoint.sh"]
    assert service["environment"]["EVENTPIPE_RUNBOOK_URL"].startswith("${EVENTPIPE_RUNBOOK_URL:?")
    mounts = dict((target, source) for source, target in compose.bind_mounts("prometheus"))
    assert mounts["/etc/prometheus/entrypoint.sh"] == ENTRYPOINT
    assert mounts["/etc/prometheus/rules"] == obs.RULES
    config = yaml.safe_load((compose.REPO / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/tmp/rules/*.yml"], "Prometheus would load the rules with relative links"
    assert "PROMETHEUS_RULES:-/tmp/rules}" in ENTRYPOINT.read_text()
