"""Prometheus rules: valid, tested by promtool on both sides of every `for:`, and each alert actionable."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from eventpipe.api import export, flight
from eventpipe.api.backlog import Backlog
from eventpipe.api.certificate import Certificate
from eventpipe.api.metrics import closed_connections, instrument
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.stack.journal import Journal
from eventpipe.stack.volume import Volume
from eventpipe.telemetry.listener import process_registry
from tests.support import observability as obs

SEVERITIES = {"page", "ticket", "heartbeat"}  # heartbeat: the watchdog, which fires always
# The windows the burn-rate alerts and the SLO dashboard read, and the 30-day SLO window.
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
# SRE Workbook, multi-window multi-burn-rate: (long window, short window, burn rate) per severity.
BURN_PAIRS = {"page": {("1h", "5m", 14.4), ("6h", "30m", 6.0)}, "ticket": {("1d", "2h", 3.0), ("3d", "6h", 1.0)}}


def alert_id(rule: dict[str, Any]) -> str:
    return f"{rule['alert']}/{rule.get('labels', {}).get('severity')}"


ALERTS = obs.alert_rules()


def test_there_are_rules_and_tests() -> None:
    assert obs.rule_files(), "no rule file in prometheus/rules/"
    assert obs.rule_test_files(), "no promtool test in prometheus/tests/"
    assert len(ALERTS) >= 10


# Compose runs Prometheus 3, `eventpipe up` the host's (2 on Debian 12): 3 leaves a range's first sample
# out, so an extrapolating function reads the same samples differently. Every rule holds under both.
@pytest.mark.parametrize("major", [2, 3])
def test_rule_files_pass_promtool_check(major: int) -> None:
    files = [str(path) for path in obs.rule_files()]
    done = subprocess.run([obs.promtool(major), "check", "rules", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("major", [2, 3])
def test_promtool_unit_tests_pass(major: int) -> None:
    files = [str(path) for path in obs.rule_test_files()]
    done = subprocess.run([obs.promtool(major), "test", "rules", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_file_is_loaded_by_a_promtool_test() -> None:
    loaded = set()
    for path in obs.rule_test_files():
        for name in yaml.safe_load(path.read_text())["rule_files"]:
            loaded.add((path.parent / name).resolve())
    missing = [path.name for path in obs.rule_files() if path.resolve() not in loaded]
    assert not missing, f"rule files no promtool test loads: {missing}"


def test_rule_tests_are_not_loaded_as_rules() -> None:
    # Prometheus loads prometheus/rules/*.yml (compose and `eventpipe up`): a test file there would be read as rules.
    assert not list(obs.RULES.glob("*test*")), "promtool tests belong in prometheus/tests/"


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_every_alert_says_how_bad_what_and_where_to_look(rule: dict[str, Any]) -> None:
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES, f"severity: one of {sorted(SEVERITIES)}"
    assert annotations.get("summary", "").strip(), "summary"
    assert annotations.get("description", "").strip(), "description"
    assert annotations.get("runbook_url", "").startswith("docs/runbooks.md#"), "runbook_url: docs/runbooks.md#<anchor>"


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_every_runbook_url_points_at_a_heading_of_the_runbooks(rule: dict[str, Any]) -> None:
    anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
    anchors = obs.runbook_anchors()
    assert anchor in anchors, f"docs/runbooks.md has no heading with anchor #{anchor}"
    assert anchors[anchor] == rule["alert"], "the heading is the alert's name"


def test_every_runbook_section_belongs_to_an_alert() -> None:
    names = {rule["alert"] for rule in ALERTS}
    stale = [heading for heading in obs.runbook_anchors().values() if heading not in names]
    assert not stale, f"runbooks for alerts that no longer exist: {stale}"


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_every_alert_waits_before_firing(rule: dict[str, Any]) -> None:
    # Without a `for:` one scrape caught half-way through an update pages someone.
    assert obs.seconds(rule.get("for", "0s")) > 0


@cache
def expectations() -> dict[tuple[str, str], list[tuple[int, set[str]]]]:
    """(test file and name, alertname) -> [(eval time, severities expected firing)] from every promtool test."""
    found: dict[tuple[str, str], list[tuple[int, set[str]]]] = defaultdict(list)
    for path in obs.rule_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                severities = {alert["exp_labels"].get("severity") for alert in case["exp_alerts"]}
                key = (f"{path.name}: {test.get('name')}", case["alertname"])
                found[key].append((obs.seconds(case["eval_time"]), severities))
    return found


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_every_alert_is_tested_on_both_sides_of_its_for(rule: dict[str, Any]) -> None:
    """Some promtool test expects the alert absent at one time and firing at a later one."""
    severity = rule["labels"]["severity"]
    for (_test, alertname), cases in expectations().items():
        if alertname != rule["alert"]:
            continue
        quiet = [at for at, firing in cases if severity not in firing]
        fired = [at for at, firing in cases if severity in firing]
        if quiet and fired and min(quiet) < max(fired):
            return
    pytest.fail(f"no promtool test expects {alert_id(rule)} absent and then firing")


def slo_rules() -> dict[str, dict[str, str]]:
    """slo -> window -> expression of slo:sli_error:ratio_rate<window>: the windows up to 6h are one rule
    per SLO; the long ones one rule for every SLO (over slo:sli_errors:rate5m and slo:sli_events:rate5m)."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    shared: dict[str, str] = {}
    for rule in obs.recording_rules():
        match = re.fullmatch(r"slo:sli_error:ratio_rate(\w+)", rule["record"])
        if match and "labels" in rule:
            found[rule["labels"]["slo"]][match.group(1)] = rule["expr"]
        elif match:
            shared[match.group(1)] = rule["expr"]
    for windows in found.values():
        windows.update(shared)
    return found


def sli_rates() -> dict[str, dict[str, str]]:
    """slo -> "errors" and "events" -> expression of its 5-minute rate, which the long windows add up."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for rule in obs.recording_rules():
        match = re.fullmatch(r"slo:sli_(errors|events):rate5m", rule["record"])
        if match:
            found[rule["labels"]["slo"]][match.group(1)] = rule["expr"]
    return found


def selectors(expr: str) -> set[str]:
    """The series an expression takes the 5-minute rate of."""
    return set(re.findall(r"rate\(([^\[]+)\[5m\]\)", expr))


def objectives() -> dict[str, float]:
    return {
        rule["labels"]["slo"]: float(rule["expr"].removeprefix("vector(").removesuffix(")"))
        for rule in obs.recording_rules()
        if rule["record"] == "slo:objective:ratio"
    }


def test_every_slo_has_an_objective_and_every_window() -> None:
    slos = slo_rules()
    assert set(slos) == set(objectives()), "an SLI without an objective, or the reverse"
    for slo, windows in slos.items():
        assert set(windows) == set(WINDOWS), f"{slo}: windows {sorted(windows)}"
        assert 0.9 <= objectives()[slo] < 1


def test_every_window_of_an_sli_is_the_same_query() -> None:
    # The rules are written out per window: a change made to one window only would skew the burn rates.
    long_windows = ("1d", "3d", "30d")
    rates = sli_rates()
    for slo, windows in slo_rules().items():
        reference = windows["5m"].replace("[5m]", "[W]")
        for window, expr in windows.items():
            if window not in long_windows:
                assert expr.replace(f"[{window}]", "[W]") == reference, f"{slo} {window} differs from 5m"
        # The long windows add up the SLI's own 5-minute rates: the same series as its 5-minute ratio.
        assert set(rates[slo]) == {"errors", "events"}, slo
        assert selectors(rates[slo]["errors"]) | selectors(rates[slo]["events"]) == selectors(windows["5m"]), slo
        # ... and its total is the ratio's denominator, not its numerator (the part after the line "/").
        denominator = re.split(r"\n\s*/\s*\n", windows["5m"])[-1]
        assert selectors(rates[slo]["events"]) == selectors(denominator), slo
        for window in long_windows:
            assert windows[window] == (
                f"sum_over_time(slo:sli_errors:rate5m[{window}]) / sum_over_time(slo:sli_events:rate5m[{window}])"
            ), window


def burn_pairs(expr: str) -> tuple[str, set[tuple[str, str, float]]]:
    """(slo, {(long, short, burn rate)}) read from a burn-rate alert's expression."""
    terms = re.findall(
        r'slo:sli_error:ratio_rate(\w+)\{slo="([\w-]+)"\} > on \(slo\) \(?(?:([\d.]+) \* )?slo:error_budget:ratio', expr
    )
    assert len(terms) == 4, f"expected two (long and short window) pairs: {expr}"
    slos = {slo for _window, slo, _rate in terms}
    assert len(slos) == 1, f"one SLO per alert: {slos}"
    pairs = set()
    for (long_window, _, long_rate), (short_window, _, short_rate) in zip(terms[::2], terms[1::2], strict=True):
        assert long_rate == short_rate, "both windows of a pair use the same burn rate"
        pairs.add((long_window, short_window, float(long_rate or 1)))
    return slos.pop(), pairs


BURN_ALERTS = [rule for rule in ALERTS if rule["alert"].endswith("BudgetBurn")]


@pytest.mark.parametrize("rule", BURN_ALERTS, ids=alert_id)
def test_burn_rate_alerts_follow_the_sre_workbook(rule: dict[str, Any]) -> None:
    slo, pairs = burn_pairs(rule["expr"])
    assert slo in objectives()
    assert pairs == BURN_PAIRS[rule["labels"]["severity"]]
    for long_window, short_window, _rate in pairs:
        # The short window is 1/12 of the long one.
        assert obs.seconds(long_window) == 12 * obs.seconds(short_window)
    # Each pair waits until the SLI has a sample in its long window from before twice its short one: a
    # first day's restart paged through a "6h" window that held four minutes, and a gate over 5 minutes
    # alone put a hole in the alerts hours after every outage of the SLI.
    gated = re.findall(
        r'ratio_rate(\w+)\{slo="[\w-]+"\} > [^\n]*\n\s*and\n\s*slo:sli_error:ratio_rate(\w+)\{slo="[\w-]+"\} > [^\n]*\n'
        r'\s*and on \(slo\)\n\s*present_over_time\(slo:sli_events:rate5m\{slo="([\w-]+)"\}\[(\w+)\] offset (\w+)\)',
        rule["expr"],
    )
    assert {(long, short) for long, short, *_ in gated} == {(long, short) for long, short, _rate in pairs}
    for long_window, short_window, gate_slo, span, offset in gated:
        assert (gate_slo, span, obs.seconds(offset)) == (slo, long_window, 2 * obs.seconds(short_window))


def test_every_slo_pages_and_tickets() -> None:
    covered = defaultdict(set)
    for rule in BURN_ALERTS:
        covered[burn_pairs(rule["expr"])[0]].add(rule["labels"]["severity"])
    assert covered == {slo: {"page", "ticket"} for slo in objectives()}


def exported_metrics() -> set[str]:
    """Every metric name the worker and the API can expose (samples or not yet)."""
    registry = process_registry()
    IngestMetrics(registry)
    registry.register(Journal(Path("/nonexistent/mosquitto.log"), own_ids=["w"]))  # `eventpipe up`'s broker log
    registry.register(Volume(Path("/")))  # `eventpipe up`'s embedded store's filesystem
    instrument(FastAPI(), registry)
    closed_connections(registry)  # the API server's (api.server)
    registry.register(Backlog(dict))  # the API's dead letters by status
    registry.register(Certificate(None))  # the API's certificate's end (no sample without one)
    registry.register(flight.seats())  # the API's requests running, by key
    registry.register(export.slots())  # its exports running, by key
    names = set()
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"]}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def referenced_metrics(text: str) -> set[str]:
    """eventpipe_*, process_* and python_* metric names in a query (recording rule names left out)."""
    return set(re.findall(r"(?<![:\w])((?:eventpipe|process|python)_\w+)(?![\w:])", text))


def recording_rules_in(text: str) -> set[str]:
    """Recording rule names (level:metric:operations) in a query."""
    return set(re.findall(r"\b[a-z_]+:[a-z_0-9]+:[a-z_0-9]+\b", text))


def test_rules_read_only_metrics_the_code_exports() -> None:
    used = set()
    for rule in obs.alert_rules() + obs.recording_rules():
        used |= referenced_metrics(rule["expr"])
    unknown = used - exported_metrics()
    assert not unknown, f"no such metric in eventpipe: {sorted(unknown)}"


def test_dashboards_read_only_metrics_the_code_exports() -> None:
    used = set()
    for dashboard in obs.dashboards().values():
        for _title, expr in obs.prometheus_queries(dashboard):
            used |= referenced_metrics(expr)
    unknown = used - exported_metrics()
    assert not unknown, f"no such metric in eventpipe: {sorted(unknown)}"


QUERIES = [(path.name, query) for path in obs.QUERY_DOCS for query in obs.doc_queries(path)]


def test_the_docs_queries_read_only_metrics_the_code_exports_and_rules_that_exist() -> None:
    # An operator pastes them into Prometheus while paged: a query of a renamed metric answers nothing, which
    # reads as "all is well".
    assert len([doc for doc, _query in QUERIES if doc == "runbooks.md"]) >= 30, QUERIES
    exported, recorded = exported_metrics(), {rule["record"] for rule in obs.recording_rules()}
    for doc, query in QUERIES:
        unknown = referenced_metrics(query) - exported
        assert not unknown, f"{doc}: {query!r} reads no such metric: {sorted(unknown)}"
        rules = recording_rules_in(query)
        assert rules <= recorded, f"{doc}: {query!r} reads no such recording rule: {sorted(rules - recorded)}"


@pytest.mark.parametrize("major", [2, 3])
def test_the_runbooks_queries_parse(major: int, tmp_path: Path) -> None:
    # promtool parses each one as a recording rule's expression: a query that does not parse is found here,
    # not by an operator at 3 a.m. (The other docs write `metric{label}` for a metric's labels, not to paste.)
    queries = obs.doc_queries(obs.RUNBOOKS)
    rules = [{"record": f"runbook:query:{index}", "expr": query} for index, query in enumerate(queries)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    command = [obs.promtool(major), "check", "rules", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_read_only_recording_rules_that_exist() -> None:
    recorded = {rule["record"] for rule in obs.recording_rules()}
    for name, dashboard in obs.dashboards().items():
        for title, expr in obs.prometheus_queries(dashboard):
            for used in recording_rules_in(expr):
                assert used in recorded, f"{name} / {title}: no recording rule {used}"
