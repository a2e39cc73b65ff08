"""ClickHouse users (clickhouse/users.d): one per role, least privilege, passwords only from the environment."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest

from eventpipe.config import Settings
from eventpipe.store.client import BACKUP_DISK
from eventpipe.store.flush import SYNC
from eventpipe.store.migration import KEPT, MIGRATIONS
from eventpipe.store.retention import RETAINED
from eventpipe.store.scratch import SCRATCH_PREFIX
from tests.support import compose

# The repository's own files, not untrusted input.
USERS = ET.parse(compose.REPO / "clickhouse" / "users.d" / "eventpipe.xml").getroot()  # noqa: S314
CONFIG = ET.parse(compose.REPO / "clickhouse" / "config.d" / "eventpipe.xml").getroot()  # noqa: S314
# Each password variable gets a value of its own, so a DSN can be traced back to the variable it reads.
MARKED = {name: f"value-of-{name}" for name in compose.required_variables()}
ROLES = {"migrate": "eventpipe_migrator", "ingest-worker": "eventpipe_ingest", "api": "eventpipe_api"}


def user(name: str) -> ET.Element:
    element = USERS.find(f"users/{name}")
    assert element is not None, f"no user {name} in users.d/eventpipe.xml"
    return element


def grants(name: str) -> list[str]:
    return [" ".join((query.text or "").split()) for query in user(name).findall("grants/query")]


# The API's /admin/ routes connect as a user of their own (EVENTPIPE_ADMIN_CLICKHOUSE_DSN).
ADMIN = ("api", "EVENTPIPE_ADMIN_CLICKHOUSE_DSN", "eventpipe_admin")
# A backup is read by attaching it as a database of this prefix (store/attachment.py).
READ_BACKUP = f"GRANT CREATE DATABASE, DROP DATABASE, SELECT ON {SCRATCH_PREFIX}*.*"
# A restore also rehearses itself into a database of that prefix before it drops anything.
REHEARSE_RESTORE = f"GRANT ALL ON {SCRATCH_PREFIX}*.*"


def dsn(service: str, variable: str = "EVENTPIPE_CLICKHOUSE_DSN") -> tuple[str, str, str]:
    """(user, password, database) of a service's EVENTPIPE_CLICKHOUSE_DSN (or another DSN variable)."""
    parts = urlsplit(compose.environment(service, MARKED)[variable])
    return parts.username or "", parts.password or "", parts.path.strip("/")


def test_the_images_passwordless_default_user_is_removed() -> None:
    default = USERS.find("users/default")
    assert default is not None and default.get("remove") == "remove"


@pytest.mark.parametrize(
    ("service", "variable", "expected"),
    [(service, "EVENTPIPE_CLICKHOUSE_DSN", role) for service, role in sorted(ROLES.items())] + [ADMIN],
)
def test_each_service_connects_as_its_own_user_with_its_password(service: str, variable: str, expected: str) -> None:
    name, password, database = dsn(service, variable)
    assert name == expected
    assert database == "eventpipe"
    element = user(name).find("password")
    assert element is not None and element.get("from_env"), f"{name}: the password must come from the environment"
    variable = element.get("from_env")
    assert password == f"value-of-{variable}", f"{service} connects with another password than {name}'s"
    # The server reads it from its own environment, which compose fills from .env, required.
    server_env = compose.service("clickhouse")["environment"]
    assert str(server_env.get(variable, "")).startswith(f"${{{variable}:?"), f"clickhouse: {variable}"


def test_no_user_has_a_password_or_hash_in_the_file() -> None:
    for element in USERS.iter():
        if element.tag.startswith("password"):
            assert not (element.text or "").strip(), f"{element.tag} written in the file"


def test_the_ingest_user_may_only_insert_into_the_tables_the_worker_writes() -> None:
    # The views feeding events_by_user and arrivals write with their definer's rights; the worker
    # itself records undated events and reads their first-copy times, and writes its own marks and reads
    # them at its start (when it last held its broker session).
    expected = ["GRANT INSERT ON eventpipe.events", "GRANT INSERT ON eventpipe.dead_letters"]
    expected += ["GRANT SELECT ON eventpipe.undated_events", "GRANT INSERT ON eventpipe.undated_events"]
    expected += ["GRANT INSERT ON eventpipe.worker_marks", "GRANT SELECT ON eventpipe.worker_marks"]
    assert sorted(grants("eventpipe_ingest")) == sorted(expected)
    assert {"events", "dead_letters", "undated_events", "events_by_user", "arrivals"} <= set(RETAINED)


def test_the_api_user_may_only_read() -> None:
    assert grants("eventpipe_api") == ["GRANT SELECT ON eventpipe.*", "GRANT SELECT ON system.parts"]
    profile = user("eventpipe_api").findtext("profile")
    readonly = USERS.findtext(f"profiles/{profile}/readonly")
    # 2: no writes or DDL, but per-query settings, which clickhouse-connect sends with parameterised SELECTs
    # and the lookup by id sets (store.query.LOOKUP_SETTINGS).
    assert readonly == "2"


def test_the_migrator_owns_the_eventpipe_database_and_reads_backups() -> None:
    # eventpipe restore runs as the migrator: it drops and restores tables, and reads the backup first.
    expected = ["GRANT ALL ON eventpipe.*", REHEARSE_RESTORE, FLUSH, *SYSTEM_OF_BACKUPS, *RUNBOOKS, *OLD_LOGS]
    assert grants("eventpipe_migrator") == expected


def test_the_runbooks_queries_read_only_what_their_user_may() -> None:
    # docs/runbooks.md's ClickHouse queries run as the migrator (its shell line says so).
    text = (compose.REPO / "docs" / "runbooks.md").read_text()
    assert "clickhouse-client -u eventpipe_migrator" in text
    read = set(re.findall(r"system\.([a-z_]+)", text)) - OPEN_SYSTEM_TABLES
    granted = {query.rsplit(".", 1)[1] for query in grants("eventpipe_migrator") if "ON system." in query}
    assert read <= granted, f"runbook queries read {sorted(read - granted)}, which the migrator may not"


# What backups, restores and erasures read of the server's state: a backup's status, a disk's room, a
# delete's mutation, the parts of the tables.
SYSTEM_OF_BACKUPS = [f"GRANT SELECT ON system.{table}" for table in ("backups", "disks", "mutations", "parts")]
RUNBOOKS = [f"GRANT SELECT ON system.{table}" for table in ("merges", "errors", "query_log")]
# The logs a server renames when config.d's retention first applies to them: an operator drops them once.
OLD_LOGS = [f"GRANT DROP TABLE ON system.{table}_0" for table in ("query_log", "text_log")]
# Who takes backups (the API's admin user, and a restore, of what it replaces) puts them on the disk.
FLUSH = f"GRANT {SYNC} ON *.*"

# What a replay writes (events through the worker's path, its outcomes) and an erasure deletes.
REPLAY_INSERTS = ("events", "undated_events", "dead_letter_outcomes")
ERASED = ("events", "events_by_user", "arrivals", "undated_events", "dead_letters", "dead_letter_outcomes")


def test_the_admin_user_may_back_up_read_record_replay_and_erase_only() -> None:
    expected = ["GRANT SELECT, BACKUP ON eventpipe.*", FLUSH, READ_BACKUP]
    # Restores are recorded by `eventpipe restore`, which runs as the owner, never through the API.
    records = [table for table in KEPT if table != "restores"]
    expected += [f"GRANT INSERT ON eventpipe.{table}" for table in (*records, *REPLAY_INSERTS)]
    expected += [f"GRANT ALTER DELETE ON eventpipe.{table}" for table in ERASED]
    # An erasure's hidden id goes by its partition (store.concealment): never a DELETE, which would log the id.
    expected += ["GRANT ALTER DROP PARTITION ON eventpipe.erasure_keys"]
    # A lightweight DELETE is an ALTER UPDATE of the row mask to 26.3's access check (ClickHouse #90754).
    expected += [f"GRANT ALTER UPDATE(_row_exists) ON eventpipe.{table}" for table in ERASED]
    expected += SYSTEM_OF_BACKUPS
    assert sorted(grants("eventpipe_admin")) == sorted(expected)


def test_no_user_manages_access_or_reaches_other_databases() -> None:
    for element in USERS.findall("users/*"):
        if element.get("remove"):
            continue
        assert element.findtext("access_management") in (None, "0"), element.tag
        for query in grants(element.tag):
            if query in (READ_BACKUP, REHEARSE_RESTORE):
                continue  # databases of that prefix: attached backups, rehearsed restores
            if query == FLUSH:
                continue  # a global privilege, to have the server call sync(2): no data of any database
            if re.fullmatch(r"GRANT SELECT ON system\.[a-z_]+", query):
                continue  # metadata the store reads (test_each_user_may_read_the_system_tables_its_code_reads)
            if query in OLD_LOGS:
                continue  # the server's own logs of before config.d's retention, to be dropped once
            # A privilege, maybe of one column (the row mask of a lightweight DELETE), on eventpipe's tables.
            mine = r"GRANT [A-Z, ]+(\([a-z_]+\))? ON eventpipe\.(\*|[a-z_]+)"
            assert re.fullmatch(mine, query), f"{element.tag}: {query}"


def test_backups_go_to_a_disk_of_their_own_on_a_volume_of_their_own() -> None:
    path = CONFIG.findtext(f"storage_configuration/disks/{BACKUP_DISK}/path")
    assert CONFIG.findtext(f"storage_configuration/disks/{BACKUP_DISK}/type") == "local"
    assert CONFIG.findtext("backups/allowed_disk") == BACKUP_DISK
    assert path and path.endswith("/")
    volumes = {target.rstrip("/"): source for source, _, target in _volumes("clickhouse")}
    assert path.rstrip("/") in volumes, f"nothing is mounted at {path}: backups would stay inside the container"
    source = volumes[path.rstrip("/")]
    assert source in compose.compose()["volumes"], f"{source} is not a named volume"
    assert source != volumes["/var/lib/clickhouse"], "backups on the data's own volume are lost with it"


def _volumes(service: str) -> list[tuple[str, str, str]]:
    found = []
    for entry in compose.service(service).get("volumes", []):
        source, _, rest = str(entry).partition(":")
        target, _, mode = rest.partition(":")
        found.append((source, mode, target))
    return found


def test_the_prometheus_endpoint_is_on() -> None:
    prometheus = CONFIG.find("prometheus")
    assert prometheus is not None
    assert prometheus.findtext("endpoint") == "/metrics"
    assert prometheus.findtext("metrics") == "true"
    # Internal only: compose must not publish it.
    port = prometheus.findtext("port")
    assert not any(f":{port}" in str(p) for p in compose.service("clickhouse").get("ports", []))


def test_the_server_keeps_statements_which_name_users_no_longer_than_an_erasure_may_take() -> None:
    # A server writes each statement with its parameters written in (an API read of one user's page names
    # them): into query_log, and at debug level into its log and text_log, which the image keeps at trace.
    for table in ("query_log", "text_log"):
        assert CONFIG.findtext(f"{table}/ttl") == "event_date + INTERVAL 30 DAY DELETE", table
    assert CONFIG.findtext("logger/level") == "information"
    assert CONFIG.findtext("text_log/level") == "information"
    # A failed statement is logged whole at error level: to the console only, which compose's logging caps,
    # not to the image's files, which rotate by size alone (10 GB).
    for log in ("log", "errorlog"):
        element = CONFIG.find(f"logger/{log}")
        assert element is not None and element.get("remove") == "remove", log
    assert CONFIG.findtext("logger/console") == "1"
    assert compose.service("clickhouse")["logging"]["options"] == {"max-size": "10m", "max-file": "3"}


def migrated_tables() -> dict[str, str]:
    """Table name -> its column definitions, as the migrations create them (their last definition)."""
    tables = {}
    texts = [(statement, None) for migration in MIGRATIONS for statement in migration.statements]
    texts += [(rebuild.create, rebuild.table) for migration in MIGRATIONS for rebuild in migration.rebuilds]
    texts += [(refill.create, refill.table) for migration in MIGRATIONS for refill in migration.refills]
    for text, rebuilt in texts:
        match = re.search(r"CREATE TABLE (?:IF NOT EXISTS )?(\{table\}|\w+)\s*\((.*?)\)\s*ENGINE", text, re.S)
        if match:
            tables[rebuilt or match.group(1)] = match.group(2)
    return tables


def test_the_api_writes_as_the_admin_user_and_reads_as_the_read_only_one() -> None:
    env = compose.environment("api", MARKED)
    parts = urlsplit(env["EVENTPIPE_ADMIN_CLICKHOUSE_DSN"])
    element = user("eventpipe_admin").find("password")
    assert element is not None and element.get("from_env") == "CLICKHOUSE_ADMIN_PASSWORD"
    assert (parts.username, parts.password, parts.path) == (
        "eventpipe_admin",
        "value-of-CLICKHOUSE_ADMIN_PASSWORD",
        "/eventpipe",
    )
    server_env = compose.service("clickhouse")["environment"]
    assert str(server_env["CLICKHOUSE_ADMIN_PASSWORD"]).startswith("${CLICKHOUSE_ADMIN_PASSWORD:?")
    assert dsn("api")[0] == "eventpipe_api"


def test_the_admin_user_may_erase_every_table_that_holds_a_user_and_never_the_audit() -> None:
    granted = grants("eventpipe_admin")
    deletable = {query.rsplit(".", 1)[1] for query in granted if query.startswith("GRANT ALTER DELETE ON")}
    holding_users = {name for name, columns in migrated_tables().items() if re.search(r"\buser_id\b", columns)}
    assert {"events", "events_by_user"} <= holding_users
    # Those, the indexes found through them, and the dead letters (with their outcomes) that name a user.
    assert deletable == holding_users | {"undated_events", "dead_letters", "dead_letter_outcomes"}
    assert "erasures" in migrated_tables() and "erasures" not in deletable
    assert user("eventpipe_admin").findtext("profile") == "default"  # may write, unlike the API's profile


# Open to every user although the server's config.xml sets select_from_system_db_requires_grant
# (ClickHouse's src/Access/ContextAccess.cpp, always_accessible_tables).
OPEN_SYSTEM_TABLES = {"one", "databases", "tables", "columns", "settings", "functions", "formats"}
# What each user runs: the store modules these import, their system tables read.
RUNS = {
    "eventpipe_api": "eventpipe.store.reader",  # the API's Reader, on the read-only user
    "eventpipe_admin": "eventpipe.api.maintenance",  # the API's /admin/ routes
    "eventpipe_migrator": "eventpipe.cli.restore",  # migrate, and restore (compose runs it as the migrator)
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_user_may_read_the_system_tables_its_code_reads(name: str) -> None:
    # The compose server's config.xml requires a grant for most system tables: without one, the feed,
    # the export and the tally (system.parts) and every backup (system.backups) were refused there.
    code = (
        "import importlib, pathlib, re, sys\n"
        f"importlib.import_module({RUNS[name]!r})\n"
        "found = set()\n"
        "for module in [m for n, m in sys.modules.items() if n.startswith('eventpipe.store')]:\n"
        "    found |= set(re.findall(r'system\\.([a-z_]+)', pathlib.Path(module.__file__).read_text()))\n"
        "print(' '.join(sorted(found)))\n"
    )
    read = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert read, "the scan found no system table: it no longer reads the code"
    granted = {query.rsplit(".", 1)[1] for query in grants(name) if query.startswith("GRANT SELECT ON system.")}
    assert read - OPEN_SYSTEM_TABLES <= granted, f"{name} reads {sorted(read - OPEN_SYSTEM_TABLES - granted)} ungranted"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_user_whose_code_syncs_the_disk_may(name: str) -> None:
    # Without the grant every backup on the compose server failed at its sync; with it where no code needs
    # it, a user could have the server call sync(2) for nothing.
    code = (
        f"import importlib, sys; importlib.import_module({RUNS[name]!r}); print('eventpipe.store.flush' in sys.modules)"
    )
    syncs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert (FLUSH in grants(name)) is (syncs == "True"), f"{name}: runs {SYNC}: {syncs}"


def test_the_api_users_reads_together_hold_at_most_half_of_the_servers_memory_and_each_read_fits_in_it() -> None:
    # One key's eight reads at once, each at its 512 MiB bound, were 4 GiB: all of what compose gives the
    # server, the worker's inserts included (an attack's arithmetic, 7 December).
    profile = USERS.find("profiles/eventpipe_api/max_memory_usage_for_user")
    assert profile is not None and profile.text, "users.d: eventpipe_api's profile sets max_memory_usage_for_user"
    together = int(profile.text)
    limit = compose.compose()["services"]["clickhouse"]["deploy"]["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)([kmg])", str(limit).lower()).groups()  # type: ignore[union-attr]
    server = int(number) * 1024 ** "kmg".index(unit) * 1024
    assert 2 * Settings.model_fields["api_query_memory_bytes"].default <= together <= server // 2, (together, limit)
