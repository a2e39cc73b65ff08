"""The documentation cannot drift from the code: every setting in the README reference with its real
default, no variable the code does not read, every relative link resolving, the one test command, every
API route in the README's endpoint tables with its parameters and `limit` bounds as the app's OpenAPI
document has them, and the payload fields' bounds.

Every alert's runbook_url resolving to a heading of docs/runbooks.md is checked in
tests/observability/test_rules.py; it is not repeated here.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from eventpipe.api.app import create_app
from eventpipe.config import Settings
from eventpipe.events import contract
from tests.support import compose
from tests.support.dockerfile import APP_DOCKERFILES
from tests.support.observability import slug

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RUNBOOKS = REPO / "docs" / "runbooks.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"(?ms)^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
VARIABLE = re.compile(r"\bEVENTPIPE_[A-Z0-9][A-Z0-9_]*")
# What the "compose" column says for a setting compose.yaml does not set.
NOT_SET = {"", "—", "-"}
# A row of the README's endpoint tables: | `GET /path?name=&name=default` ... | answer |
ENDPOINT_ROW = re.compile(r"(?m)^\| `(GET|POST) (/[^`?\s]*)(?:\?([^`]*))?`([^|]*)\|(.*)\|[ \t]*$")
# How a row gives the bounds of `limit`: "`limit` 1..1000 (default 100)", "`limit` (1 to 1000, default 1000)".
LIMIT = re.compile(r"`limit`[^0-9`]{0,12}(\d[\d,]*)(?:\.\.| to )(\d[\d,]*),? \(?default (\d[\d,]*)")


def variable(field: str) -> str:
    return f"EVENTPIPE_{field.upper()}"


def section(text: str, title: str) -> str:
    """The body of the level-2 section `title`, up to the next level-2 heading."""
    match = re.search(rf"(?ms)^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", text)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


@cache
def reference() -> dict[str, list[str]]:
    """Variable -> cells (variable, default, compose, meaning) of the README's configuration table."""
    rows: dict[str, list[str]] = {}
    for line in section(README.read_text(), "Configuration").splitlines():
        match = re.match(r"\|\s*`(EVENTPIPE_\w+)`\s*\|", line)
        if match:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            assert len(cells) == 4, f"a row is | variable | default | compose | meaning |: {line}"
            assert match.group(1) not in rows, f"{match.group(1)} is documented twice"
            rows[match.group(1)] = cells
    return rows


def test_every_setting_is_in_the_readme_reference() -> None:
    settings = {variable(name) for name in Settings.model_fields}
    documented = set(reference())
    assert not settings - documented, f"settings missing from README.md, Configuration: {sorted(settings - documented)}"
    assert not documented - settings, f"README.md documents variables Settings lacks: {sorted(documented - settings)}"


def documented_default(cell: str, field: Any) -> object:
    """The default cell read as the setting would read it from the environment."""
    values = re.findall(r"`([^`]*)`", cell)
    if not values:
        return None
    if isinstance(field.get_default(call_default_factory=True), list):
        return [part.strip() for part in values[0].split(",") if part.strip()]
    return TypeAdapter(field.annotation).validate_python(values[0])


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_reference_gives_the_default_the_code_has(name: str) -> None:
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    row = reference().get(variable(name))
    assert row, f"{variable(name)} is missing from README.md's configuration table"
    cell = row[1]
    if default in ("", [], None):
        # Nothing to write in backticks: the cell says "empty" or "none", then what that means.
        assert re.match(r"(empty|none)\b", cell), f"{variable(name)}: the default is empty, README.md says {cell!r}"
        return
    assert documented_default(cell, field) == default, (
        f"{variable(name)}: README.md gives {cell!r}, the code's default is {default!r} (first `value` in the cell)"
    )


def compose_settings() -> set[str]:
    """EVENTPIPE_ variables some service of compose.yaml sets."""
    found = set()
    for definition in compose.compose()["services"].values():
        environment = definition.get("environment") or {}
        names = [item.split("=", 1)[0] for item in environment] if isinstance(environment, list) else environment
        found |= {name for name in names if name.startswith("EVENTPIPE_")}
    return found


def test_the_reference_says_what_compose_sets() -> None:
    rows = reference()
    unmarked = [name for name in sorted(compose_settings()) if rows.get(name, ["", "", ""])[2] in NOT_SET]
    assert not unmarked, f"compose.yaml sets these; README.md's compose column does not say so: {unmarked}"
    marked = {name for name, cells in rows.items() if cells[2] not in NOT_SET}
    # What the images set, and the worker's name, which the worker image derives (the replica's).
    stale = sorted(marked - compose_settings() - image_settings() - {"EVENTPIPE_MQTT_CLIENT_ID"})
    assert not stale, f"README.md's compose column names variables compose.yaml does not set: {stale}"


def image_settings() -> set[str]:
    """EVENTPIPE_ variables the app images set (ENV in their Dockerfiles)."""
    return {name for path in APP_DOCKERFILES for name in re.findall(r"\b(EVENTPIPE_[A-Z0-9_]+)=", path.read_text())}


def prose(text: str) -> str:
    """The text without fenced code blocks (links there are examples, not links)."""
    return FENCE.sub("", text)


def readers() -> list[Path]:
    """Files that may read an EVENTPIPE_ variable besides Settings: the test suite's switches
    (EVENTPIPE_FAULT_RATE, EVENTPIPE_TEST_REQUIRE_DOCKER, ...), other code, CI and the images."""
    found = [REPO / ".gitlab-ci.yml", REPO / ".ci" / "run", *APP_DOCKERFILES]
    for folder in ("src", "tests", "scripts", "prometheus", "alertmanager"):
        found += [path for path in (REPO / folder).rglob("*") if path.suffix in {".py", ".sh", ""} and path.is_file()]
    return [path for path in found if path.exists() and path != Path(__file__).resolve()]


def test_the_docs_name_no_variable_the_code_does_not_read() -> None:
    known = {variable(name) for name in Settings.model_fields}
    for path in readers():
        known |= set(VARIABLE.findall(path.read_text(errors="replace")))
    for page in PAGES:
        unknown = sorted(set(VARIABLE.findall(page.read_text())) - known)
        assert not unknown, f"{page.relative_to(REPO)} names variables nothing reads: {unknown}"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub and GitLab give the headings of a Markdown page (repeats get -1, -2, ...)."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+?)[ \t]*#*$", prose(page.read_text())):
        anchor = slug(heading.replace("`", ""))
        found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
        seen[anchor] += 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", prose(page.read_text()))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto: are not files of this repository
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    blocks = [block.strip() for block in re.findall(r"(?ms)^```[^\n]*\n(.*?)^```", README.read_text())]
    assert "python -m pytest" in blocks, "README.md must give `python -m pytest` alone in a code block"
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in commands if line and not line.startswith("#")]
    assert commands[-1] == "python -m pytest", "CI runs the README's test command last"


def services_started(command: str) -> list[str]:
    """The services a `docker compose up ...` command names: its words that are no option or option value."""
    words = command.split()[3:]
    named = []
    for index, word in enumerate(words):
        # --scale takes its value as the next word; every other option here is a flag or spelt with "=".
        if not word.startswith("-") and not (index and words[index - 1] == "--scale"):
            named.append(word)
    return named


def test_the_runbooks_bring_the_workers_back_at_the_number_that_ran() -> None:
    # `up` without --scale brings the workers back to one replica: the others' broker sessions keep
    # their share of the stream unread until they expire, a week later, when it is lost.
    commands = [" ".join(span.split()) for span in re.findall(r"`(docker compose up[^`]*)`", RUNBOOKS.read_text())]
    assert commands, "the runbooks give no `docker compose up` command: this test reads nothing"
    unscaled = [
        command
        for command in commands
        if "ingest-worker" in services_started(command) or not services_started(command)
        if "--scale ingest-worker=" not in command
    ]
    assert not unscaled, f"add --scale ingest-worker=N or name the worker in the command: {unscaled}"


@cache
def openapi() -> dict[str, Any]:
    """The OpenAPI document of the API with every route, the admin ones included (nothing is queried)."""
    app = create_app(MagicMock(), CollectorRegistry(), ["k" * 32], backups=MagicMock(), admin=MagicMock())
    return app.openapi()


def endpoint_rows() -> dict[tuple[str, str], tuple[dict[str, str], str]]:
    """(method, path) -> (query parameter -> the value the row shows, answer cell) of README's endpoint tables."""
    rows = {}
    for method, path, query, _note, answer in ENDPOINT_ROW.findall(section(README.read_text(), "HTTP API")):
        parameters = dict(part.partition("=")[::2] for part in query.split("&") if part)
        rows[(method, path.replace("{id}", "{event_id}"))] = (parameters, answer)
    return rows


def test_the_endpoint_tables_give_every_route_with_its_parameters() -> None:
    served = {
        (method.upper(), path): operation
        for path, operations in openapi()["paths"].items()
        for method, operation in operations.items()
        if path not in ("/healthz", "/readyz")  # the prose says what these two answer
    }
    rows = endpoint_rows()
    assert set(rows) == set(served), (
        f"routes the README's tables lack: {sorted(set(served) - set(rows))}; "
        f"rows no route serves: {sorted(set(rows) - set(served))}"
    )
    for key, (parameters, answer) in rows.items():
        schemas = {
            parameter["name"]: parameter["schema"]
            for parameter in served[key].get("parameters", [])
            if parameter["in"] == "query"
        }
        assert set(parameters) == set(schemas), f"{key}: README gives {sorted(parameters)}, the API {sorted(schemas)}"
        for name, shown in parameters.items():
            if shown:
                assert shown == str(schemas[name].get("default")), f"{key}: {name}={shown}, the default is not that"
        if "limit" in schemas:
            bounds = LIMIT.search(answer)
            assert bounds, f"{key}: the row does not say `limit` LOW..HIGH (default D)"
            low, high, default = (int(number.replace(",", "")) for number in bounds.groups())
            limit = schemas["limit"]
            assert (low, high, default) == (limit["minimum"], limit["maximum"], limit["default"]), (
                f"{key}: README says limit {low}..{high} (default {default}), the API "
                f"{limit['minimum']}..{limit['maximum']} (default {limit['default']})"
            )


@pytest.mark.parametrize(
    ("field", "most"),
    [
        ("event_type", contract.MAX_TYPE_CHARS),
        ("event_id", contract.MAX_ID_CHARS),
        ("user_id", contract.MAX_USER_CHARS),
    ],
)
def test_the_payload_table_gives_each_fields_bound(field: str, most: int) -> None:
    rows = re.findall(rf"(?m)^\| `{field}` \|(.*)$", section(README.read_text(), "Publishing events"))
    assert len(rows) == 1, f"README.md, Publishing events: no one row for `{field}`"
    assert f"at most {most:,} characters" in rows[0], f"`{field}`: the contract takes {most:,} characters at most"
