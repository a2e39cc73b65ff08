"""Settings: environment variables with the EVENTPIPE_ prefix, checked when read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from eventpipe.cli.variables import settings_problem
from eventpipe.config import Settings
from eventpipe.errors import ConfigError


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTPIPE_BATCH_MAX_ROWS", "250")
    monkeypatch.setenv("EVENTPIPE_API_KEYS", "alpha-0123456789, beta-01234567890,,gamma-0123456789")
    monkeypatch.setenv("EVENTPIPE_MQTT_SHARE_GROUP", "ingest")
    settings = Settings()
    assert settings.batch_max_rows == 250
    assert settings.api_keys == ["alpha-0123456789", "beta-01234567890", "gamma-0123456789"]
    assert settings.subscription.name == "$share/ingest/events/#"


def test_no_password_or_key_shows_in_the_settings_repr() -> None:
    settings = Settings(
        clickhouse_dsn="http://reader:dsn-pw@ch:8123/db",
        admin_clickhouse_dsn="http://admin:admin-pw@ch:8123/db",
        mqtt_url="mqtt://ingest:mqtt-pw@broker:1883",
        api_keys="partner-key-0123456789",
        cursor_secret="c" * 40,
        mqtt_session_secret="s" * 40,
    )
    shown = repr(settings) + str(settings)
    assert "batch_max_rows=" in shown  # the rest is still there to debug with
    for secret in ("dsn-pw", "admin-pw", "mqtt-pw", "partner-key", "c" * 40, "s" * 40):
        assert secret not in shown


def test_a_guessable_or_unsendable_api_key_is_refused_by_position_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short: guessed one 401 at a time. A space or non-ASCII: no HTTP header carries it, so it never matched.
    for given, position in (("good-key-0123456789,shortkey7", "key 2 of 2"), ("has space-0123456789", "key 1 of 1")):
        monkeypatch.setenv("EVENTPIPE_API_KEYS", given)
        with pytest.raises(ValidationError) as refused:
            Settings()
        problem = settings_problem(refused.value)
        assert (
            problem.startswith("invalid settings: api_keys (EVENTPIPE_API_KEYS): " + position)
            and "openssl rand -hex 24" in problem
        )
        assert "shortkey7" not in problem and "has space" not in problem
    monkeypatch.setenv("EVENTPIPE_API_KEYS", "k" * 16 + ",é" + "k" * 20)
    with pytest.raises(ValidationError, match="key 2 of 2"):
        Settings()
    monkeypatch.setenv("EVENTPIPE_API_KEYS", "k" * 16)
    assert Settings().api_keys == ["k" * 16]


def test_the_share_group_carries_an_hmac_only_holders_of_the_secret_compute() -> None:
    from eventpipe.mqtt.session import session_id

    secret = "s" * 40
    settings = Settings(mqtt_share_group="eventpipe", mqtt_session_secret=secret)
    group = settings.subscription.name.split("/")[1]
    assert settings.subscription.name == f"$share/{group}/events/#" and group.startswith("eventpipe-")
    assert len(group) == len("eventpipe-") + 32
    assert group != Settings(mqtt_share_group="eventpipe", mqtt_session_secret="t" * 40).subscription.name.split("/")[1]
    assert group != session_id("eventpipe", secret)  # keyed apart from the session ids
    assert group not in settings.subscription.shown and "eventpipe-<hmac>" in settings.subscription.shown
    assert settings.subscription.plain == "$share/eventpipe/events/#"
    assert Settings(mqtt_session_secret=secret).subscription.name == "events/#"


def test_a_window_smaller_than_a_batch_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="stalls"):
        Settings(batch_max_rows=20_000, mqtt_receive_maximum=10_000)


def test_a_held_bytes_budget_too_small_for_one_message_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A message is held as its topic and its payload (cut to EVENTPIPE_MAX_PAYLOAD_BYTES + 1), together at most
    # the packet size the worker announces, and a batch closes at half the budget: a budget under two such
    # messages would stall the worker for ever (under one) or leave messages to the timer.
    monkeypatch.setenv("EVENTPIPE_MAX_PAYLOAD_BYTES", "65536")
    monkeypatch.setenv("EVENTPIPE_MAX_HELD_BYTES", "139275")
    with pytest.raises(
        ValidationError, match=r"EVENTPIPE_MAX_HELD_BYTES \(139275\) must be at least twice the largest message"
    ):
        Settings()
    monkeypatch.setenv("EVENTPIPE_MAX_HELD_BYTES", "139276")
    assert Settings().max_held_bytes == 139276


def test_the_receive_maximum_cannot_exceed_what_mqtt_allows() -> None:
    with pytest.raises(ValidationError):
        Settings(mqtt_receive_maximum=70_000)


def test_without_a_dsn_the_embedded_engine_lives_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_clickhouse_dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert Settings(clickhouse_dsn="http://ch:8123/db").resolved_clickhouse_dsn == "http://ch:8123/db"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mqtt_topic", "events/#/more", "not a valid MQTT topic filter"),
        ("mqtt_topic", "events/a+b", "not a valid MQTT topic filter"),
        ("mqtt_share_group", "a/b", "may not contain"),
        ("mqtt_share_group", "a+b", "may not contain"),
        ("mqtt_topic", "events/shop/#", "is not under EVENTPIPE_MQTT_TOPIC"),
        ("batch_max_rows", "50000", "or the worker stalls"),
        ("retry_initial_s", "60", "must be at least"),
    ],
)
def test_a_subscription_the_broker_would_refuse_is_refused_at_start(field: str, value: str, message: str) -> None:
    # Checks of several settings at once have no field for pydantic to name: their messages name the variable.
    with pytest.raises(ValidationError, match=message) as refused:
        Settings(**{field: value})
    assert f"EVENTPIPE_{field.upper()}" in str(refused.value)


def test_a_log_level_is_one_of_pythons_in_any_case() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"
    assert Settings(log_level="Warn").log_level == "WARNING"
    assert Settings(log_level="critical").log_level == "CRITICAL"
    with pytest.raises(ValidationError) as refused:
        Settings(log_level="verbose")  # before, logging itself refused it: a traceback, exit 1
    assert refused.value.errors()[0]["loc"] == ("log_level",)


def test_probes_may_be_turned_off_for_a_narrow_subscription() -> None:
    assert Settings(mqtt_topic="events/shop/#", probe_interval_s=0).subscription.name == "events/shop/#"


def test_tls_settings_that_cannot_work_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTPIPE_API_TLS_CERT_FILE", "/tls/server.pem")
    with pytest.raises(ValidationError, match="EVENTPIPE_API_TLS_KEY_FILE"):
        Settings()
    monkeypatch.setenv("EVENTPIPE_API_TLS_KEY_FILE", "/tls/server-key.pem")
    # A CA for a plain connection would be ignored while the operator believes the link encrypted.
    monkeypatch.setenv("EVENTPIPE_MQTT_CA_FILE", "/tls/ca.pem")
    monkeypatch.setenv("EVENTPIPE_MQTT_URL", "mqtt://broker:1883")
    with pytest.raises(ValidationError, match="EVENTPIPE_MQTT_CA_FILE is set, so EVENTPIPE_MQTT_URL must be mqtts://"):
        Settings()
    monkeypatch.setenv("EVENTPIPE_MQTT_URL", "mqtts://broker:8883")
    settings = Settings()
    assert (settings.mqtt_ca_file, settings.api_tls_key_file) == (Path("/tls/ca.pem"), Path("/tls/server-key.pem"))


OPTIONAL = (
    *("mqtt_ca_file", "api_tls_cert_file", "api_tls_key_file", "api_keys_file", "prometheus_rules_dir"),
    *("broker_log_file", "mqtt_session_secret", "erasure_secret", "cursor_secret"),
)


def test_an_empty_optional_variable_is_unset_not_the_current_directory_or_a_secret_of_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # compose passes an unset ${VAR:-} as an empty string: EVENTPIPE_PROMETHEUS_RULES_DIR= made `up` refuse to
    # copy the rules into themselves, and EVENTPIPE_CURSOR_SECRET= a secret `up` did not keep, so every cursor
    # was refused after a restart (a review).
    for field in OPTIONAL:
        monkeypatch.setenv(f"EVENTPIPE_{field.upper()}", "")
    settings = Settings()
    assert {field: getattr(settings, field) for field in OPTIONAL} == dict.fromkeys(OPTIONAL)


@pytest.mark.parametrize("field", ["mqtt_session_secret", "erasure_secret", "cursor_secret"])
def test_a_short_secret_is_refused_naming_the_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    # A short cursor secret can be guessed offline from one cursor; `up` applied every migration first.
    monkeypatch.setenv(f"EVENTPIPE_{field.upper()}", "hunter2")
    with pytest.raises(ValidationError) as refused:
        Settings()
    said = settings_problem(refused.value)
    assert f"(EVENTPIPE_{field.upper()}): shorter than 32 characters" in said and "hunter2" not in said


def test_an_empty_host_or_data_dir_is_the_default_not_every_interface_or_the_current_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # EVENTPIPE_API_HOST= opened the API on 0.0.0.0 and [::]; EVENTPIPE_DATA_DIR= filled the current
    # directory with the generated key, the secrets and the store (an attack).
    for name in ("EVENTPIPE_API_HOST", "EVENTPIPE_METRICS_HOST", "EVENTPIPE_DATA_DIR"):
        monkeypatch.setenv(name, " ")
    settings = Settings()
    assert (settings.api_host, settings.metrics_host, settings.data_dir) == (
        "127.0.0.1",
        "127.0.0.1",
        Path(".eventpipe"),
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # Past MQTT's bounds paho failed at connect (struct.error), a worker's stop failed with
        # OverflowError, a probe thread died and left freshness blind, `up` failed at start (an attack).
        ("EVENTPIPE_MQTT_KEEPALIVE_S", "100000"),
        ("EVENTPIPE_MQTT_SESSION_EXPIRY_S", "99999999999"),
        ("EVENTPIPE_MQTT_CLIENT_ID", "x" * 70_000),
        ("EVENTPIPE_MAX_PAYLOAD_BYTES", str(256 * 1024 * 1024)),
        ("EVENTPIPE_SHUTDOWN_TIMEOUT_S", "inf"),
        ("EVENTPIPE_PROBE_INTERVAL_S", "nan"),
        # EventpipeIngestStalled pages after a minute and more without a committed probe: it paged every
        # cycle of a healthy pipeline probed every 5 minutes (found by a cross-check of the config as code).
        ("EVENTPIPE_PROBE_INTERVAL_S", "61"),
        ("EVENTPIPE_RETRY_MAX_S", "1e300"),
        ("EVENTPIPE_BATCH_MAX_MS", "10000000000000"),  # the flusher died at the first message
        ("EVENTPIPE_PROBE_TOPIC", "events/#"),
        ("EVENTPIPE_PROBE_TOPIC", "events/+"),
    ],
)
def test_a_value_that_would_fail_at_run_time_is_refused_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    field = variable.removeprefix("EVENTPIPE_").lower()
    assert field in str(refused.value) or variable in str(refused.value)


@pytest.mark.parametrize("name", ["d#x", "d?q=1"])
def test_a_data_dir_the_engines_dsn_cannot_name_is_refused_naming_the_setting(tmp_path: Path, name: str) -> None:
    # The driver ends the DSN's path at "#" or "?": the store went to `d`, outside the data dir's rights.
    with pytest.raises(ConfigError, match=r"holds '\?' or '#'.*EVENTPIPE_DATA_DIR"):
        _ = Settings(data_dir=tmp_path / name).resolved_clickhouse_dsn


def test_a_retention_past_the_end_of_clickhouse_datetime_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # toDateTime(time) + 36,500 days wraps past 2106 to 1990: every event would expire as it is stored.
    monkeypatch.setenv("EVENTPIPE_RETENTION_DAYS", "36500")
    with pytest.raises(ValidationError, match="retention_days"):
        Settings()
    monkeypatch.setenv("EVENTPIPE_RETENTION_DAYS", "18250")
    assert Settings().retention_days == 18250


@pytest.mark.parametrize("field", ["mqtt_url", "clickhouse_dsn", "admin_clickhouse_dsn"])
def test_every_url_setting_is_refused_when_it_cannot_be_read_as_typed_without_quoting_it(field: str) -> None:
    # The commands are run with each shape in tests/e2e/test_redaction.py; here, that each URL setting checks.
    scheme = "mqtt" if field == "mqtt_url" else "http"
    with pytest.raises(ValidationError) as refused:
        Settings(**{field: f"{scheme}://user:s3cr 3t@host:1"})
    assert refused.value.errors()[0]["loc"] == (field,)
    assert "s3cr" not in str(refused.value.errors(include_input=False))
