"""Runbook links that open: the copy of the rules `eventpipe up` gives Prometheus links every alert absolutely.

The same copy made by compose's Prometheus (prometheus/entrypoint.sh) is checked in
tests/observability/test_runbooks.py, and what a running `eventpipe up` loads in tests/e2e/test_up.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from eventpipe.config import Settings
from eventpipe.errors import ConfigError
from eventpipe.stack.runbook import checkout_runbooks, filled_rules
from tests.support import observability as obs

URL = "https://gitlab.example.com/team/eventpipe/-/blob/0123abc/docs/runbooks.md"


def links(folder: Path) -> dict[str, str]:
    """alert name -> runbook_url, of every alert in the rule files of `folder`."""
    found = {}
    for path in sorted(folder.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found |= {rule["alert"]: rule["annotations"]["runbook_url"] for rule in group["rules"] if "alert" in rule}
    return found


def test_every_alert_links_to_its_runbook_heading_at_the_url(tmp_path: Path) -> None:
    filled = filled_rules(obs.RULES, tmp_path / "rules", URL)
    found = links(filled)
    assert found.keys() == {rule["alert"] for rule in obs.alert_rules()}
    anchors = obs.runbook_anchors()
    for alert, link in found.items():
        base, _, anchor = link.partition("#")
        assert base == URL, f"{alert}: {link}"
        assert anchors.get(anchor) == alert, f"{alert}: docs/runbooks.md has no heading #{anchor}"
    # Everything else is as written: the rule files differ in their links alone.
    for path in obs.rule_files():
        assert (filled / path.name).read_text() == path.read_text().replace("docs/runbooks.md#", f"{URL}#")


def test_without_a_url_the_links_open_this_checkouts_runbooks(tmp_path: Path) -> None:
    url = checkout_runbooks()
    assert url == obs.RUNBOOKS.resolve().as_uri()
    assert set(links(filled_rules(obs.RULES, tmp_path / "rules", ""))) == {rule["alert"] for rule in obs.alert_rules()}
    assert all(link.startswith(url + "#") for link in links(tmp_path / "rules").values())


def test_a_rule_file_gone_from_the_source_is_gone_from_the_copy(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "rules"
    source.mkdir()
    (source / "one.yml").write_text("groups: []\n")
    (source / "two.yml").write_text("groups: []\n")
    filled_rules(source, target, URL)
    (source / "two.yml").unlink()
    assert sorted(path.name for path in filled_rules(source, target, URL).glob("*.yml")) == ["one.yml"]


def test_without_rules_prometheus_is_given_the_missing_folder_as_before(tmp_path: Path) -> None:
    assert filled_rules(tmp_path / "none", tmp_path / "rules", URL) == tmp_path / "none"
    assert not (tmp_path / "rules").exists()


@pytest.mark.parametrize("source", ["rules", ".", "rules/kept"])
def test_rules_kept_in_or_around_the_copy_are_refused_and_left_as_they_are(tmp_path: Path, source: str) -> None:
    # The copy's folder was the rules' own: their files were deleted, nothing was copied, and Prometheus ran
    # without rules, saying nothing.
    rules = tmp_path / source
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "alerts.yml").write_text("groups: []\n")
    with pytest.raises(ConfigError, match="EVENTPIPE_PROMETHEUS_RULES_DIR"):
        filled_rules(rules, tmp_path / "rules", URL)
    assert (rules / "alerts.yml").read_text() == "groups: []\n"


def test_a_rules_folder_without_rule_files_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "source").mkdir()
    with caplog.at_level(logging.WARNING):
        filled_rules(tmp_path / "source", tmp_path / "rules", URL)
    assert "no rule file (*.yml) in" in caplog.text
    assert "EVENTPIPE_PROMETHEUS_RULES_DIR" in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "docs/runbooks.md",
        "https://x/docs/runbooks.md#top",
        "https://x/run books.md",
        "https://x/a|b",
        "ftp://x/a",
        "http://x/{{",  # a Go template in the rules: Prometheus loaded none of them
    ],
)
def test_a_url_that_would_not_open_or_would_break_the_rules_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="runbook_url"):
        Settings(runbook_url=url)
