"""Settings: the one place configuration is read, always passed in, never global."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from eventpipe import coherence
from eventpipe.api import keyfile
from eventpipe.events import contract
from eventpipe.events.contract import ENVELOPE_KEYS, MAX_DEPTH, MAX_FUTURE_SKEW_S, MAX_PAYLOAD_BYTES, PROBE_TOPIC
from eventpipe.mqtt import address, packet
from eventpipe.mqtt.session import MIN_SECRET_CHARS, Subscription, session_id, subscription
from eventpipe.store import dsn

# What a runbook URL may be: absolute, and safe inside YAML and a sed replacement.
# No "{" or "}": the rules are Go templates, and "{{" in the link made Prometheus load none of them.
RUNBOOK_URL = re.compile(r"(https?|file)://[^\s#\"'\\|&{}]+")


class Settings(BaseSettings):
    """Every knob of eventpipe; environment variables carry the EVENTPIPE_ prefix.

    Fields that can hold a password or key are SecretStr or left out of repr(), which a traceback's locals show."""

    model_config = SettingsConfigDict(env_prefix="EVENTPIPE_", extra="ignore")

    # Where the native stack keeps its data (chDB files, broker persistence).
    data_dir: Path = Path(".eventpipe")
    # A ClickHouse server (http://user:pass@host:8123/db) or the embedded
    # engine (chdb:///path); empty means chDB under data_dir.
    clickhouse_dsn: str = Field(default="", repr=False)
    # The ClickHouse user the API's /admin/ routes act as: backups, replays and
    # erasures need rights its read-only user lacks. Empty: clickhouse_dsn's.
    admin_clickhouse_dsn: str = Field(default="", repr=False)
    # Days to keep events and dead letters; 0 keeps them forever. The TTL is
    # toDateTime(time) + days, and ClickHouse's DateTime ends in February 2106:
    # past it the sum wraps to the 1970s and every event expires as it is stored
    # (measured: 36,500 days kept none). 50 years keeps clear of it until 2056.
    retention_days: int = Field(default=0, ge=0, le=18_250)

    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", repr=False)
    # For an mqtts:// URL: the CA that signed the broker's certificate (PEM).
    # Empty trusts the system's CAs, as for any public certificate.
    mqtt_ca_file: Path | None = None
    # The broker `eventpipe up` starts: a name looked up on PATH (and /usr/sbin), or a path.
    mosquitto_binary: str = "mosquitto"
    # `eventpipe broker-metrics` only: the broker's log file, whose oversize lines it counts and which it
    # keeps short; empty: no such count.
    broker_log_file: Path | None = None
    # The worker's name; its MQTT client id, which names its broker session, is
    # this name plus an HMAC of it under mqtt_session_secret (see mqtt/session.py).
    mqtt_client_id: str = Field(default="eventpipe-ingest", min_length=1, max_length=128)
    # `eventpipe worker` only: when mqtt_client_id is not set, the worker's name
    # is the first label of its own address's name in DNS: in compose, the
    # replica's container name (see mqtt/replica.py). The worker image turns it on.
    mqtt_client_id_from_dns: bool = False
    # Makes that id unguessable, so no other client can take the session over.
    # The same value at every start, or the broker keeps the old session's
    # queue. Empty: `eventpipe up` keeps one in data_dir, `eventpipe worker` refuses to start.
    mqtt_session_secret: SecretStr | None = None
    mqtt_topic: str = contract.TOPIC_FILTER
    # Non-empty: the workers of the group split the load, subscribed as $share/<group>-<HMAC>/<topic>
    # under mqtt_session_secret (mqtt/session.py: share_group).
    mqtt_share_group: str = ""
    # Bounds are MQTT's: a 16-bit keep-alive, a 32-bit session expiry (past them paho failed at connect).
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=65_535)
    # How long the broker keeps the worker's session (and queues for it) while
    # it is away. A week covers a long outage; the broker caps it too.
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60, le=4_294_967_295)
    # In-flight window: the broker sends at most this many unacknowledged
    # messages. Must cover a batch being written plus the next one filling.
    mqtt_receive_maximum: int = Field(default=40_000, ge=1, le=65_535)

    # A probe event sent through the whole path (broker, worker, ClickHouse)
    # every so often, so freshness is known when traffic is idle; 0 turns it off. At most a minute:
    # EventpipeIngestStalled pages once no probe has been committed for a minute and more, so a longer
    # interval paged every cycle on a healthy pipeline.
    probe_interval_s: float = Field(default=10.0, ge=0, le=60, allow_inf_nan=False)
    probe_topic: str = PROBE_TOPIC

    # Each insert writes a part per table it feeds, at a fixed cost of its own:
    # a large batch spreads that over more rows when traffic fills it.
    batch_max_rows: int = Field(default=20_000, ge=1)
    # Past threading's TIMEOUT_MAX (about 9.2e12 ms) the flusher died at the first message: an hour is plenty.
    batch_max_ms: int = Field(default=200, ge=1, le=3_600_000)

    # Larger payloads are dead letters; the broker refuses packets over this
    # plus 4 KiB (mqtt/packet.py). MQTT carries at most 256 MiB in a packet.
    # At most what a packet may carry (268,435,455 bytes, MQTT's largest) less the broker's headroom for
    # its topic and headers: 256 MiB passed, then failed `up` at start.
    max_payload_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=256, le=packet.LARGEST_PAYLOAD)
    # The bytes of messages (payloads and topics) a worker holds uncommitted, whatever the window: past
    # it the worker stops reading the socket, as when the window is full. A
    # batch closes at half of it, so the next one can fill while it is written.
    max_held_bytes: int = Field(default=128 * 1024 * 1024, ge=1)
    max_depth: int = Field(default=MAX_DEPTH, ge=1, le=512)
    # Timestamps further ahead of the receive time than this are rejected:
    # clock skew is tolerated, year 3000 is not (it would create partitions).
    max_future_skew_s: int = Field(default=MAX_FUTURE_SKEW_S, ge=0)
    # ... and timestamps further behind it than this many days: a producer
    # spreading events over decades would otherwise add a partition (and a
    # part per batch) per month it touches, slowing every insert and read.
    # Two years keep a device's late upload or a year-old export; 25 monthly
    # partitions at most. 0: no bound, for a backfill of older events.
    max_past_days: int = Field(default=730, ge=0)
    # Objects whose fields are looked into when the top level lacks a contract
    # field, for producers that wrap events, e.g. {"event_data": {...}}.
    envelope_keys: Annotated[list[str], NoDecode] = list(ENVELOPE_KEYS)

    # Finite and at most an hour: inf passed, then the worker's stop failed with OverflowError.
    retry_initial_s: float = Field(default=0.5, gt=0, le=3600, allow_inf_nan=False)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    shutdown_timeout_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)

    api_host: str = "127.0.0.1"
    # The longest a read the client can narrow with since/until may run (ClickHouse's max_execution_time;
    # store.reader.Reader): past it, 422 too_costly. On the embedded engine every other request waits.
    api_query_timeout_s: float = Field(default=10.0, ge=0.05, le=3600, allow_inf_nan=False)
    # The most of ClickHouse's memory one query of the API may hold (its max_memory_usage; store.bound): past
    # it, 422 too_costly for those reads, 503 for the rest. The embedded engine shares `up`'s process with the
    # worker, and stops only at 90% of the machine's memory. Every read of the read benchmark holds under
    # 32 MiB at 10M events; a breakdown spills its counts to disk past 64 MiB (store.breakdown); distinct users
    # by a property unique to each of 10M events held 693 MiB for 6 s. A filter on properties through FINAL
    # holds about 35 MiB per part of 60 KB events it meets (README.md, EVENTPIPE_API_QUERY_MEMORY_BYTES).
    api_query_memory_bytes: int = Field(default=512 * 1024 * 1024, ge=256 * 1024 * 1024, le=1 << 40)
    api_port: int = Field(default=8000, ge=0, le=65_535)
    # Exports running at once in an API process, half of them (at least one) per key (api.slot): each
    # holds about two pages of events while its client reads.
    api_max_exports: int = Field(default=4, ge=1, le=64)
    # Keyed requests in flight in an API process, from the key check until the client has read the
    # answer (api.flight), and of them one key's. At most 32: the API's pool has 40 threads, and the
    # probes and a keys file's reading keep the rest.
    api_max_requests: int = Field(default=32, ge=1, le=32)
    api_max_requests_per_key: int = Field(default=8, ge=1, le=32)
    api_keys: Annotated[list[str], NoDecode] = Field(default=[], repr=False)
    # A JSON file of named keys (their SHA-256 only), each optionally limited
    # to event types and a rate (api.keyfile); read again when it changes.
    api_keys_file: Path | None = None
    # HTTPS: the API's certificate (PEM, chain included) and its private key,
    # both or neither; without them the API speaks plain HTTP.
    api_tls_cert_file: Path | None = None
    api_tls_key_file: Path | None = None
    # Signs pagination cursors so clients cannot forge them. Empty: a random
    # key per process, so cursors die with a restart and every API replica
    # behind one address needs the same value (at least 32 characters, checked
    # by the API without echoing it).
    cursor_secret: SecretStr | None = None
    # Keys the hash of a user id in the erasure audit, so that the audit alone
    # cannot tell whose data went. Empty: `eventpipe up` keeps one in data_dir,
    # `eventpipe api` answers erasure requests 503.
    erasure_secret: SecretStr | None = None
    # `eventpipe up` only: the Prometheus it runs when the binary is there, and
    # the rules it loads (default: prometheus/rules of this checkout).
    prometheus_port: int = Field(default=9090, ge=0, le=65_535)
    prometheus_rules_dir: Path | None = None
    # Where docs/runbooks.md opens in a browser: the rules Prometheus loads link
    # each alert to <this>#<alert>. Empty: this checkout's copy, as a file:// URL.
    runbook_url: str = ""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65_535)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        # WARN is what many other tools call WARNING (and Python's logging accepts it too).
        level = value.strip().upper() if isinstance(value, str) else value
        return "WARNING" if level == "WARN" else level

    @field_validator("api_keys", "envelope_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, value: list[str]) -> list[str]:
        found = keyfile.env_keys_problem(value)
        if found is not None:
            raise ValueError(found)
        return value

    @field_validator("data_dir", "api_host", "metrics_host", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: ValidationInfo) -> object:
        # compose passes an unset ${VAR:-} as "": as a host that is every interface, as the data dir the
        # current directory (both seen in an attack), where the default is loopback and .eventpipe.
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[str(info.field_name)].default
        return value

    @field_validator(
        *("mqtt_ca_file", "api_tls_cert_file", "api_tls_key_file", "api_keys_file", "prometheus_rules_dir"),
        *("broker_log_file", "mqtt_session_secret", "erasure_secret", "cursor_secret"),
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # compose passes an unset ${VAR:-} as "", which would otherwise be the path "." (`up` refused to copy
        # its rules into itself), or a secret of no characters (kept by none, so `up` gave the API a new cursor
        # key at every start, and every cursor handed out before a restart was refused).
        return None if value == "" else value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        # Said without the value: the error would otherwise be the one place the password shows.
        found = address.problem(value)
        if found is not None:
            raise ValueError(found)
        return value.strip()

    @field_validator("clickhouse_dsn", "admin_clickhouse_dsn")
    @classmethod
    def _clickhouse_dsn(cls, value: str) -> str:
        found = dsn.problem(value) if value.strip() else None  # empty: the embedded engine under data_dir
        if found is not None:
            raise ValueError(found)
        return value.strip()

    @field_validator("runbook_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        # It is written into YAML and a sed replacement (prometheus/entrypoint.sh checks the same).
        if value and not RUNBOOK_URL.fullmatch(value):
            raise ValueError(
                "an absolute http://, https:// or file:// URL of docs/runbooks.md, without '#', spaces, quotes, "
                "backslashes, '|', '&', '{' or '}'"
            )
        return value

    @field_validator("mqtt_session_secret", "erasure_secret", "cursor_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # The message names the setting (by the caller) and never the value.
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"shorter than {MIN_SECRET_CHARS} characters: use `openssl rand -hex 32`")
        return value

    @model_validator(mode="after")
    def _settings_agree(self) -> Settings:
        found = coherence.problem(self)
        if found is not None:
            raise ValueError(found)
        return self

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or dsn.embedded_dsn(self.data_dir)

    @property
    def resolved_admin_clickhouse_dsn(self) -> str:
        return self.admin_clickhouse_dsn or self.resolved_clickhouse_dsn

    @property
    def clickhouse_dsn_setting(self) -> str:
        """What to fix when the store fails: its DSN's variable, or the data dir that chose the embedded one."""
        return (
            "EVENTPIPE_CLICKHOUSE_DSN"
            if self.clickhouse_dsn
            else "the data dir: EVENTPIPE_DATA_DIR, or `up --data-dir`"
        )

    @property
    def admin_clickhouse_dsn_setting(self) -> str:
        return "EVENTPIPE_ADMIN_CLICKHOUSE_DSN" if self.admin_clickhouse_dsn else self.clickhouse_dsn_setting

    @property
    def mqtt_session_id(self) -> str:
        """The worker's MQTT client id: its name alone only when no secret is set (tests, benchmarks)."""
        if self.mqtt_session_secret is None:
            return self.mqtt_client_id
        return session_id(self.mqtt_client_id, self.mqtt_session_secret.get_secret_value())

    @property
    def subscription(self) -> Subscription:
        """The worker's topic filter, as it subscribes, as it is shown, and as old versions subscribed."""
        secret = None if self.mqtt_session_secret is None else self.mqtt_session_secret.get_secret_value()
        return subscription(self.mqtt_topic, self.mqtt_share_group, secret)
