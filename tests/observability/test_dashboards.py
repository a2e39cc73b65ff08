"""Grafana as code: provisioned datasources with fixed uids, dashboards that follow from them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support import compose
from tests.support import observability as obs

DASHBOARDS = obs.dashboards()
EXPECTED = {
    "eventpipe-overview.json",
    "eventpipe-ingest.json",
    "eventpipe-api.json",
    "eventpipe-slos.json",
    "eventpipe-clickhouse-broker.json",
    "eventpipe-events.json",
}
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|\w+_over_time)\s*\(")


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((obs.PROVISIONING / "datasources").glob("*.yml")):
        for datasource in yaml.safe_load(path.read_text())["datasources"]:
            found[datasource["uid"]] = datasource
    return found


def test_every_board_of_the_issue_is_there() -> None:
    assert set(DASHBOARDS) == EXPECTED


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_identity(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert dashboard["uid"] == name.removesuffix(".json"), "a fixed uid: links and bookmarks survive a reload"
    assert dashboard["title"].startswith("eventpipe / ")
    assert "eventpipe" in dashboard["tags"]
    assert "id" not in dashboard or dashboard["id"] is None, "an exported database id would clash on import"
    ids = [panel["id"] for panel in obs.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_uids_and_titles_are_unique() -> None:
    assert (
        len({d["uid"] for d in DASHBOARDS.values()})
        == len({d["title"] for d in DASHBOARDS.values()})
        == len(DASHBOARDS)
    )


def test_datasources_are_provisioned_with_fixed_uids() -> None:
    datasources = provisioned_datasources()
    assert datasources["prometheus"]["type"] == "prometheus"
    assert datasources["clickhouse"]["type"] == "grafana-clickhouse-datasource"


def test_the_clickhouse_datasource_reads_as_the_read_only_user() -> None:
    clickhouse = provisioned_datasources()["clickhouse"]
    assert clickhouse["jsonData"]["username"] == "eventpipe_api"
    assert clickhouse["jsonData"]["defaultDatabase"] == "eventpipe"
    assert clickhouse["jsonData"]["host"] == "clickhouse"
    # Grafana expands $VAR in provisioning files from its own environment: compose must pass that variable.
    variable = clickhouse["secureJsonData"]["password"].removeprefix("$").strip("{}")
    assert variable in compose.service("grafana")["environment"]
    assert compose.service("grafana")["environment"][variable].startswith("${CLICKHOUSE_API_PASSWORD:?")


def test_the_clickhouse_plugin_is_pinned_and_installed_before_grafana_serves() -> None:
    environment = compose.service("grafana")["environment"]
    # Grafana 12.1 deprecated GF_INSTALL_PLUGINS; the async GF_PLUGINS_PREINSTALL could let provisioning load
    # the dashboard before its datasource's plugin is there.
    assert "GF_INSTALL_PLUGINS" not in environment and "GF_PLUGINS_PREINSTALL" not in environment
    plugins = environment["GF_PLUGINS_PREINSTALL_SYNC"]
    assert re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", plugins), plugins


def datasource_references(node: object, path: str = "") -> list[tuple[str, object]]:
    """Every `datasource` value in a dashboard, with where it is."""
    found: list[tuple[str, object]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((path, value))
            found += datasource_references(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += datasource_references(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_use_datasource_variables_never_fixed_ids(name: str) -> None:
    dashboard = DASHBOARDS[name]
    variables = obs.datasource_variables(dashboard)
    assert variables, "a datasource variable lets the board work on any Grafana"
    for where, reference in datasource_references(
        {"panels": dashboard["panels"], "templating": dashboard["templating"]}
    ):
        assert isinstance(reference, dict), f"{where}: datasource by name ({reference!r}) breaks on rename"
        uid = str(reference.get("uid", ""))
        match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
        assert match, f"{where}: hard-coded datasource uid {uid!r}"
        variable = match.group(1) or match.group(2)
        assert variable in variables, f"{where}: ${variable} is not a datasource variable"
        assert reference.get("type") == variables[variable], f"{where}: type differs from ${variable}'s"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variables_default_to_the_provisioned_datasources(name: str) -> None:
    datasources = provisioned_datasources()
    for variable in DASHBOARDS[name]["templating"]["list"]:
        if variable["type"] == "datasource":
            default = variable["current"]["value"]
            assert default in datasources and datasources[default]["type"] == variable["query"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_rates_use_the_rate_interval(name: str) -> None:
    # A fixed window is too short at long time ranges and scrape intervals, and too coarse when zoomed in.
    for title, expr in obs.prometheus_queries(DASHBOARDS[name]):
        windows = re.findall(r"\[([^\]]*)\]", expr)
        if RANGE_FUNCTIONS.search(expr):
            assert windows, f"{title}: {expr}"
        assert all(window == "$__rate_interval" for window in windows), f"{title}: use [$__rate_interval]: {expr}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_query_variables_are_declared_and_only_match_regexes(name: str) -> None:
    dashboard = DASHBOARDS[name]
    declared = {variable["name"] for variable in dashboard["templating"]["list"]}
    for title, expr in obs.prometheus_queries(dashboard):
        for variable in re.findall(r"\$\{?(\w+)", expr):
            if variable.startswith("__"):
                continue
            assert variable in declared, f"{title}: ${variable} is not declared"
            # "All" is a regex (.+): a variable anywhere but in =~ would not match it.
            assert re.search(rf'=~"\$\{{?{variable}\}}?"', expr), f'{title}: use label=~"${variable}"'


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_says_what_it_shows(name: str) -> None:
    for panel in obs.panels(DASHBOARDS[name]):
        if panel["type"] in ("row", "text"):
            continue
        assert panel.get("title") and panel.get("description"), f"panel {panel.get('id')}: title and description"
        assert panel.get("targets"), f"{panel['title']}: no query"


def test_golden_signals_per_service_on_the_overview() -> None:
    titles = [panel["title"] for panel in obs.panels(DASHBOARDS["eventpipe-overview.json"])]
    rows = [
        title
        for panel, title in zip(obs.panels(DASHBOARDS["eventpipe-overview.json"]), titles, strict=True)
        if panel["type"] == "row"
    ]
    assert rows[1:] == ["Ingest worker", "HTTP API", "ClickHouse", "MQTT broker"]
    for signal in ("Traffic", "Errors", "Latency", "Saturation"):
        assert sum(title.startswith(signal) for title in titles) == 4, signal


def test_events_board_reads_clickhouse_the_way_the_api_does() -> None:
    queries = obs.clickhouse_queries(DASHBOARDS["eventpipe-events.json"])
    assert queries
    for title, sql in queries:
        assert "$__timeFilter(" in sql, f"{title}: bound it by the dashboard's time range"
        if re.search(r"\bFROM events\b", sql):
            # Probe events are the pipeline's own, not users' events.
            assert "event_type != '_probe'" in sql or "event_type = '" in sql, f"{title}: leave probes out"


def sli_routes(slo: str) -> set[str]:
    """The route selectors the recording rules of `slo` use."""
    exprs = [rule["expr"] for rule in obs.recording_rules() if rule.get("labels", {}).get("slo") == slo]
    return set(re.findall(r'route!~"[^"]*"', "".join(exprs)))


@pytest.mark.parametrize(
    ("title", "slo"), [("Errors: share of answers", "api-availability"), ("Latency: answer time", "api-latency")]
)
def test_the_overviews_api_errors_and_latency_read_the_routes_their_sli_reads(title: str, slo: str) -> None:
    # Exports and backups drew the p99 line above the SLI's 1 s while the SLI itself was met.
    (selector,) = sli_routes(slo)
    (panel,) = [
        panel
        for panel in obs.panels(DASHBOARDS["eventpipe-overview.json"])
        if panel["title"] == title and "eventpipe_http" in str(panel["targets"])
    ]
    for target in panel["targets"]:
        assert set(re.findall(r"route!?[=~]+\"[^\"]*\"", target["expr"])) == {selector}, target["expr"]
