"""The monitoring as code, read as data: rules, promtool tests, runbooks, dashboards, their queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules"
RULE_TESTS = REPO / "prometheus" / "tests"
DASHBOARDS = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"
RUNBOOKS = REPO / "docs" / "runbooks.md"
README = REPO / "README.md"
ALERTMANAGER = REPO / "alertmanager"

# Metrics of the dependencies: their panels are empty where the dependency does not run (the native stack).
DEPENDENCY_METRIC = re.compile(r"\b(ClickHouse\w+|alertmanager_\w+)")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed to check the monitoring config: apt-get install {package}", pytrace=False)
    return path


@cache
def promtools() -> dict[int, str]:
    """Each promtool at hand by major version: PATH's, and the one EVENTPIPE_TEST_PROMTOOL_3 names
    (.ci/promtool3.py fetches it). Compose runs Prometheus 3, `eventpipe up` the host's (Debian 12: 2)."""
    found: dict[int, str] = {}
    for path in (shutil.which("promtool"), os.environ.get("EVENTPIPE_TEST_PROMTOOL_3")):
        if not path:
            continue
        done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        version = re.search(r"version (\d+)\.", done.stdout + done.stderr)
        if done.returncode != 0 or version is None:
            pytest.fail(f"{path} --version: {done.stdout}{done.stderr}", pytrace=False)
        found.setdefault(int(version.group(1)), path)
    return found


def promtool(major: int) -> str:
    """The promtool of that major version, skipping the test where there is none."""
    if not promtools():
        tool("promtool", "prometheus")
    path = promtools().get(major)
    if path is None:
        pytest.skip(
            f"no promtool {major} here: Debian 12's prometheus package has 2, `python3 .ci/promtool3.py` fetches 3 "
            "(then set EVENTPIPE_TEST_PROMTOOL_3 to the path it prints)"
        )
    return path


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.test.yml"))


@cache
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            groups.append({**group, "file": path.name})
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]


def seconds(duration: str) -> int:
    """A Prometheus duration ("1h30m", "90s", "2d") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return round(sum(int(number) * units[unit] for number, unit in parts))


def slug(heading: str) -> str:
    """The anchor GitHub and GitLab give a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> dict[str, str]:
    """Anchor -> heading text, for every level-2 heading of docs/runbooks.md."""
    headings = re.findall(r"(?m)^## (.+)$", RUNBOOKS.read_text())
    return {slug(heading): heading for heading in headings}


# A metric (eventpipe's, the client library's process_ and python_) or a recording rule (level:metric:operations).
_METRIC_OR_RULE = re.compile(r"(?<![:\w])(?:eventpipe|process|python)_\w+(?![\w:'])|\b\w+:eventpipe_\w+:\w+\b")
# What makes a span a query rather than a name in prose (`eventpipe_api` is also a ClickHouse user): a selector,
# a call, a range, a comparison, or a recording rule's name.
_EXPRESSION = re.compile(r"[(){}\[\]<>=:]")
# The docs' other code: ClickHouse's SQL (which names its users eventpipe_api, ...), shell lines, and names
# with a placeholder (the scratch database eventpipe_backup_<hex>).
_NOT_PROMQL = re.compile(r"\b(?:SELECT|FROM|DROP|curl|docker|eventpipe [a-z])\b|<\w+>")
# Where an operator is given queries to paste.
QUERY_DOCS = [RUNBOOKS, *(REPO / "docs" / name for name in ("operations.md", "slos.md", "architecture.md")), README]


def doc_queries(path: Path) -> list[str]:
    """The PromQL the Markdown file `path` gives an operator to paste: every inline code span, joined across
    its line breaks, that is a query naming a metric or a recording rule."""
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text))
    return [
        span
        for span in spans
        if _METRIC_OR_RULE.search(span) and _EXPRESSION.search(span) and not _NOT_PROMQL.search(span)
    ]


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Variable name -> datasource type, for the dashboard's datasource variables."""
    return {
        variable["name"]: variable["query"]
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "datasource"
    }


def _targets(dashboard: dict[str, Any], field: str) -> list[tuple[str, str]]:
    return [
        (panel.get("title", ""), target[field])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if field in target
    ]


def prometheus_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target."""
    return _targets(dashboard, "expr")


def clickhouse_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, SQL) of every ClickHouse target."""
    return _targets(dashboard, "rawSql")


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric, label) of every `label_values(metric, label)` query variable."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        match = re.fullmatch(r"label_values\(([\w:]+(?:\{[^}]*\})?),\s*(\w+)\)", variable["definition"])
        assert match, f"{variable['name']}: only label_values(metric, label) queries are supported here"
        found.append((variable["name"], match.group(1), match.group(2)))
    return found


def as_promql(expr: str, rate_interval: str = "1m") -> str:
    """A panel's query as Grafana sends it: its interval macros resolved, every variable matching anything."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    expr = re.sub(r"\$__(interval|range)\b", rate_interval, expr)
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", ".+", expr)


def as_clickhouse_sql(sql: str, start: int, end: int, interval_s: int = 60) -> str:
    """A panel's SQL as grafana-clickhouse-datasource expands its macros, for the time range [start, end]."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})", sql
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval_s} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    assert "$" not in sql, f"a macro or variable left unexpanded: {sql}"
    return sql


def depends_on_a_dependency(expr: str) -> bool:
    """Whether a query reads ClickHouse's or Alertmanager's metrics (absent from the native stack, which has
    the broker's since `up` reads its $SYS values)."""
    return DEPENDENCY_METRIC.search(expr) is not None
