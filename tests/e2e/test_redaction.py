"""No command prints a secret: `migrate`, `worker`, `api`, `publish` and `up`, when they work and when they fail."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from eventpipe.port import free_port
from tests.support.services import RECEIVE_MAXIMUM, ContainerBroker, LocalBroker, use_docker
from tests.support.stack import Up, eventpipe_command, run_eventpipe
from tests.support.wait import wait_until


class Outputs:
    """Everything the commands under test wrote: stdout, stderr and log files, by where it came from."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.texts: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        self.texts[name] = self.texts.get(name, "") + text

    def run(self, name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = run_eventpipe(*args, env=env, timeout=60)
        self.add(name, done.stdout + done.stderr)
        return done

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        # To a file, not a pipe: nothing is read until the end, and a full pipe would block the command.
        log = (self.directory / f"{name}.out").open("w")
        return subprocess.Popen([*eventpipe_command(), *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)

    def stop(self, name: str, process: subprocess.Popen[str]) -> int:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        self.add(name, (self.directory / f"{name}.out").read_text())
        return code

    def leaks(self, passwords: dict[str, str]) -> list[str]:
        return [
            f"{secret} in the output of {name}"
            for name, text in self.texts.items()
            for secret, value in passwords.items()
            if value in text
        ]


def get(url: str, key: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=3) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def metric(metrics_port: int, name: str) -> float:
    _status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
    lines = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(lines[0].split()[1]) if lines else -1.0


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def test_no_command_prints_a_password(
    tmp_path: Path, broker: LocalBroker | ContainerBroker, request: pytest.FixtureRequest
) -> None:
    # The test broker takes any credentials when it runs natively, so they are made up here;
    # the compose broker's are real and already in its URL.
    mqtt_url = (
        broker.url if urlsplit(broker.url).password else with_password(broker.url, "ingest", secrets.token_hex(8))
    )
    dsn = request.getfixturevalue("clickhouse_dsn") if use_docker() else f"chdb://{tmp_path / 'clickhouse'}"
    unreachable_dsn = f"http://migrate:{secrets.token_hex(8)}@127.0.0.1:{free_port()}/eventpipe"
    api_key = secrets.token_urlsafe(16)
    cursor_secret = secrets.token_hex(20)
    short_cursor_secret = secrets.token_hex(8)  # refused as too short: the refusal must not quote it
    session_secret = secrets.token_hex(20)
    short_session_secret = secrets.token_hex(8)
    passwords = {
        "the MQTT password": urlsplit(mqtt_url).password or "",
        "the unreachable DSN's password": urlsplit(unreachable_dsn).password or "",
        "the API key": api_key,
        "the cursor secret": cursor_secret,
        "the short cursor secret": short_cursor_secret,
        "the MQTT session secret": session_secret,
        "the short MQTT session secret": short_session_secret,
    }
    if urlsplit(dsn).password:
        passwords["the ClickHouse password"] = urlsplit(dsn).password or ""
    metrics_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "EVENTPIPE_CLICKHOUSE_DSN": dsn,
        "EVENTPIPE_MQTT_URL": mqtt_url,
        "EVENTPIPE_API_KEYS": api_key,
        "EVENTPIPE_CURSOR_SECRET": cursor_secret,
        "EVENTPIPE_MQTT_SESSION_SECRET": session_secret,
        "EVENTPIPE_METRICS_PORT": str(metrics_port),
        "EVENTPIPE_API_PORT": str(api_port),
        "EVENTPIPE_PROBE_INTERVAL_S": "0",
        # The test broker's window, so the worker's batches fill as in production.
        "EVENTPIPE_MQTT_RECEIVE_MAXIMUM": str(RECEIVE_MAXIMUM),
        "EVENTPIPE_BATCH_MAX_ROWS": str(RECEIVE_MAXIMUM // 2),
        "EVENTPIPE_LOG_LEVEL": "DEBUG",
    }
    out = Outputs(tmp_path)

    assert out.run("migrate", "migrate", env=env).returncode == 0
    worker = out.start("worker", "worker", env=env)
    try:
        wait_until(lambda: metric(metrics_port, "eventpipe_mqtt_connected") == 1, what="the worker subscribed")
        published = out.run("publish", "publish", "--mqtt-url", mqtt_url, "--count", "200", env=env)
        assert published.returncode == 0, published.stderr
        stored = "eventpipe_events_stored_total"
        wait_until(lambda: metric(metrics_port, stored) == 200, what="200 stored by eventpipe worker")
    finally:
        assert out.stop("worker", worker) == 0
    assert ":***@127.0.0.1" in out.texts["worker"], "the worker names its broker at start, password masked"

    api = out.start("api", "api", env=env)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{api_port}/readyz")[0] == 200, what="eventpipe api ready")
        assert get(f"http://127.0.0.1:{api_port}/events?limit=1", api_key)[0] == 200
        assert get(f"http://127.0.0.1:{api_port}/events?limit=1", "a-wrong-key")[0] == 401
        # Its metrics, on the listener the worker's were on: a key is counted by its name, never shown.
        _status, scraped = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert 'eventpipe_api_key_requests_total{code="200",key="env#1"} 1.0' in scraped
        assert api_key not in scraped
        assert get(f"http://127.0.0.1:{api_port}/metrics", api_key)[0] == 404
    finally:
        assert out.stop("api", api) == 0

    up = Up(tmp_path / "up", "--mqtt-url", mqtt_url, env=env, prometheus=False)
    try:
        up.wait_ready()
        assert out.run("publish", "publish", "--mqtt-url", mqtt_url, "--count", "10", env=env).returncode == 0
        wait_until(lambda: up.metric("eventpipe_events_stored_total") == 10, what="10 stored by eventpipe up")
        assert up.stop() == 0
    finally:
        up.kill()
        out.add("up", up.output())
    assert "mqtt=mqtt://" in out.texts["up"]

    # The ways they fail, where a URL or DSN is most likely to be quoted whole.
    unreachable = {**env, "EVENTPIPE_CLICKHOUSE_DSN": unreachable_dsn}
    assert out.run("migrate-unreachable", "migrate", env=unreachable).returncode == 2
    assert out.run("worker-unreachable", "worker", env=unreachable).returncode == 2
    assert out.run("api-unreachable", "api", env=unreachable).returncode == 2
    bad_scheme = mqtt_url.replace("mqtt://", "mqtx://", 1)
    assert out.run("publish-bad-url", "publish", "--mqtt-url", bad_scheme, "--count", "1", env=env).returncode == 2
    assert out.run("worker-bad-url", "worker", env={**env, "EVENTPIPE_MQTT_URL": bad_scheme}).returncode == 2
    short = {**env, "EVENTPIPE_CURSOR_SECRET": short_cursor_secret}
    assert out.run("api-short-cursor-secret", "api", env=short).returncode == 2
    assert "(EVENTPIPE_CURSOR_SECRET): shorter than" in out.texts["api-short-cursor-secret"]
    short_session = {**env, "EVENTPIPE_MQTT_SESSION_SECRET": short_session_secret}
    assert out.run("worker-short-session-secret", "worker", env=short_session).returncode == 2
    assert "EVENTPIPE_MQTT_SESSION_SECRET" in out.texts["worker-short-session-secret"]
    invalid = {**env, "EVENTPIPE_BATCH_MAX_ROWS": "100000"}
    assert out.run("migrate-invalid-settings", "migrate", env=invalid).returncode == 2
    assert "EVENTPIPE_BATCH_MAX_ROWS" in out.texts["migrate-invalid-settings"], "the problem is still named"

    for log_file in tmp_path.rglob("*.log"):
        out.add(str(log_file.relative_to(tmp_path)), log_file.read_text(errors="replace"))
    assert not out.leaks(passwords), "\n".join(out.leaks(passwords))


# Each way a URL's password can make its URL unreadable, as the user typed it: "/", "?" or "#" end the host,
# so the rest was read as port or path, and errors about those quoted it ("MQTT URL has an invalid port:
# 'mqtt://ingest:Sup3r/Secret99@…'", "Port could not be cast … 'Sup3r'"); a character Unicode normalises
# into one of them made Python's parser quote the whole user:password@host; a blank ended the log mask
# early; a URL without its "scheme://" was quoted whole in the error saying so.
@pytest.mark.parametrize(
    ("mark", "url", "told"),
    [
        ("/", "{scheme}://{user}:{password}@{host}", "percent-encode"),
        ("?", "{scheme}://{user}:{password}@{host}", "percent-encode"),
        ("#", "{scheme}://{user}:{password}@{host}", "percent-encode"),
        ("\uff0f", "{scheme}://{user}:{password}@{host}", "percent-encode"),
        (" ", "{scheme}://{user}:{password}@{host}", "percent-encode it (%20)"),
        ("", "{user}:{password}@{host}", "must start with"),
        ("", "{scheme}:/{user}:{password}@{host}", "must start with"),
    ],
    ids=["slash", "question", "hash", "fullwidth-slash", "blank", "no-scheme", "one-slash"],
)
def test_a_url_that_cannot_be_read_as_typed_is_refused_without_printing_its_password(
    mark: str, url: str, told: str
) -> None:
    head, tail = secrets.token_hex(6), secrets.token_hex(6)
    password = f"{head}{mark}{tail}"
    mqtt_url = url.format(scheme="mqtt", user="ingest", password=password, host=f"127.0.0.1:{free_port()}")
    dsn = url.format(scheme="http", user="default", password=password, host=f"127.0.0.1:{free_port()}") + "/default"
    base = {**os.environ, "EVENTPIPE_MQTT_SESSION_SECRET": secrets.token_hex(20), "EVENTPIPE_API_KEYS": "k" * 32}
    runs = {
        "worker": (("worker",), {**base, "EVENTPIPE_MQTT_URL": mqtt_url}, "EVENTPIPE_MQTT_URL"),
        "migrate": (("migrate",), {**base, "EVENTPIPE_CLICKHOUSE_DSN": dsn}, "EVENTPIPE_CLICKHOUSE_DSN"),
        "publish": (("publish", "--mqtt-url", mqtt_url, "--count", "1"), base, "mqtt_url (--mqtt-url)"),
        "restore": (
            ("restore", "--clickhouse-dsn", dsn, "--backup", "20990101T000000Z-abcdef"),
            base,
            "ClickHouse DSN",
        ),
    }
    for name, (args, env, names) in runs.items():
        done = run_eventpipe(*args, env=env, timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode == 2, f"{name}: {output[-500:]}"
        assert names in output and told in output, f"{name}: {output[-500:]}"
        assert head not in output and tail not in output, f"{name} printed part of the password: {output[-500:]}"


def test_publish_takes_its_broker_from_the_environment_and_warns_of_a_password_in_its_flag(
    broker: LocalBroker | ContainerBroker,
) -> None:
    # A password in --mqtt-url is in `ps` for every user and in the shell's history; the README showed one.
    url = broker.url.replace("mqtt://", "mqtt://producer:s3cret-pw@", 1)
    done = run_eventpipe("publish", "--count", "5", env={**os.environ, "EVENTPIPE_MQTT_URL": url})
    assert done.returncode == 0 and "5 acknowledged by the broker (QoS 1)" in done.stdout, done.stdout + done.stderr
    assert "warning" not in done.stderr
    done = run_eventpipe("publish", "--mqtt-url", url, "--count", "5", "--qos", "0")
    assert done.returncode == 0 and "sent at QoS 0, unacknowledged" in done.stdout, done.stdout + done.stderr
    assert "the password in --mqtt-url shows in `ps`" in done.stderr and "set EVENTPIPE_MQTT_URL" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
