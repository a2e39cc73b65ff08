"""The container broker's config (mosquitto/): no anonymous access, one direction per user, and the same
flow limits as the broker `eventpipe up` generates. The last tests run the real broker on these files."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.config import Settings
from eventpipe.mqtt import packet
from eventpipe.mqtt.wire import DISCONNECT, connect_packet
from eventpipe.port import free_port
from eventpipe.stack.access import MONITOR, USER, Access
from eventpipe.stack.broker import effective_user, render_config, session_expiration
from eventpipe.stack.certificate import local_authority
from eventpipe.stack.mosquitto import find_binary
from tests.support import compose
from tests.support.mqtt import stream_publish, unreleased
from tests.support.services import SESSION_EXPIRY_S
from tests.support.wait import wait_until

MOSQUITTO = compose.REPO / "mosquitto"
# Everything that decides whether a QoS 1 message is kept, queued or sent, but how it is kept on disk
# (the container's Mosquitto 2.1 writes each change; `eventpipe up` keeps the snapshots of 2.0).
FLOW_KEYS = (
    "max_inflight_messages",
    "max_queued_messages",
    "max_queued_bytes",
    "max_packet_size",
    "persistent_client_expiration",
    "upgrade_outgoing_qos",
)
DUMMY = {name: "x" for name in compose.required_variables()}


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found.setdefault(key, []).append(value.strip())
    return found


def parse_acl(text: str) -> dict[str, list[tuple[str, str]]]:
    """user -> [(access, topic)]; the user "" is anonymous clients, whose rules come before any user line."""
    rules: dict[str, list[tuple[str, str]]] = {}
    user = ""
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            rules[user] = []
        elif words[0] == "topic":
            access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            rules.setdefault(user, []).append((access, topic))
        else:
            raise AssertionError(f"unexpected ACL line: {line}")
    return rules


def acl_rules() -> dict[str, list[tuple[str, str]]]:
    """user -> [(access, topic)] from mosquitto/acl."""
    rules = parse_acl((MOSQUITTO / "acl").read_text())
    assert "" not in rules, "topic rules before any user apply to anonymous clients"
    return rules


CONFIG = directives((MOSQUITTO / "mosquitto.conf").read_text())


def test_anonymous_access_is_off_and_every_client_is_authorised() -> None:
    assert CONFIG["allow_anonymous"] == ["false"]
    assert CONFIG["password_file"] and CONFIG["acl_file"]
    assert "per_listener_settings" not in CONFIG


def test_the_native_broker_gives_anonymous_producers_and_its_worker_what_compose_gives_its_users(
    tmp_path: Path,
) -> None:
    defaults = Settings()
    loaded = directives("\n".join(Access(defaults.mqtt_topic, defaults.probe_topic).write(tmp_path)))
    native = parse_acl(Path(loaded["acl_file"][0]).read_text())
    rules = acl_rules()
    # Its statistics reader as compose's exporter: the broker's own values, nothing else.
    assert native == {"": rules["producer"], USER: rules[USER], MONITOR: rules["exporter"]}
    assert Path(loaded["password_file"][0]).read_text().startswith(f"{USER}:$7$")


def native_defaults() -> dict[str, list[str]]:
    """The config `eventpipe up` writes for its broker under the default settings."""
    defaults = Settings()
    return directives(
        render_config(
            1883,
            Path("/x"),
            defaults.mqtt_receive_maximum,
            max_payload_bytes=defaults.max_payload_bytes,
            session_expiry_s=defaults.mqtt_session_expiry_s,
        )
    )


def test_the_flow_limits_equal_those_of_the_native_broker() -> None:
    native = native_defaults()
    for key in FLOW_KEYS:
        assert CONFIG[key] == native[key], f"{key}: container {CONFIG[key]} vs native {native[key]}"


def test_the_packet_limit_is_the_workers_payload_limit_and_a_little_more() -> None:
    # Lower than the worker's limit, producers are refused payloads the worker would store; higher, the
    # broker acknowledges what it must then drop for the worker (the worker asks for no larger packets).
    worker = compose.environment("ingest-worker", DUMMY)
    payload = int(worker.get("EVENTPIPE_MAX_PAYLOAD_BYTES", Settings().max_payload_bytes))
    assert CONFIG["max_packet_size"] == [str(packet.broker_limit(payload))]
    assert payload < packet.broker_limit(payload) <= payload + 4096
    native = directives(render_config(1883, Path("/x"), 100, max_payload_bytes=1000, session_expiry_s=SESSION_EXPIRY_S))
    assert native["max_packet_size"] == [str(packet.broker_limit(1000))]


def test_a_left_session_ends_after_the_workers_own_expiry_and_no_later() -> None:
    # Sessions that asked to last for ever, under ever new client ids, grew the broker by their ids
    # (60 KB each) across restarts; sooner than the worker's, and its queue would go while it is away.
    worker = compose.environment("ingest-worker", DUMMY)
    expiry_s = int(worker.get("EVENTPIPE_MQTT_SESSION_EXPIRY_S", Settings().mqtt_session_expiry_s))
    assert CONFIG["persistent_client_expiration"] == [session_expiration(expiry_s)] == ["168h"]
    assert directives(render_config(1883, Path("/x"), 100, max_payload_bytes=1000, session_expiry_s=3601))[
        "persistent_client_expiration"
    ] == ["2h"]
    # A worker whose session never ends (MQTT 5's 2**32 - 1) leaves every session to its client.
    forever = render_config(1883, Path("/x"), 100, max_payload_bytes=1000, session_expiry_s=2**32 - 1)
    assert "persistent_client_expiration" not in directives(forever)


def test_the_broker_window_equals_the_workers_receive_maximum() -> None:
    worker = compose.environment("ingest-worker", DUMMY)
    assert CONFIG["max_inflight_messages"] == [worker["EVENTPIPE_MQTT_RECEIVE_MAXIMUM"]]
    assert int(worker["EVENTPIPE_BATCH_MAX_ROWS"]) <= int(worker["EVENTPIPE_MQTT_RECEIVE_MAXIMUM"])


def test_the_queue_is_large_and_explicit() -> None:
    # Mosquitto 2.0 drops QoS 1 messages silently beyond it, and 0 was seen dropping too.
    assert int(CONFIG["max_queued_messages"][0]) >= 1_000_000
    assert CONFIG["max_queued_bytes"] == ["0"]
    persistence = CONFIG["persistence_location"][0].rstrip("/")
    volumes = compose.service("mosquitto")["volumes"]
    assert any(not v.startswith("./") and v.split(":")[1] == persistence for v in volumes), "not on a named volume"


def test_what_the_broker_acknowledged_is_on_disk_at_its_next_loop_not_its_next_snapshot() -> None:
    """Snapshots every 10 s lost 2,548 to 6,556 acknowledged messages a kill at 2,000 msg/s: compose's
    broker is a Mosquitto 2.1 whose SQLite plugin commits at every loop, synced; the native broker, on
    the Mosquitto a distribution has, keeps the snapshots and saves at once when the worker subscribes."""
    image, _, version = compose.service("mosquitto")["image"].partition(":")
    assert image == "eclipse-mosquitto" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 1)
    assert CONFIG["global_plugin"] == [compose.PERSIST_PLUGIN]
    assert CONFIG["plugin_opt_flush_period"] == ["0"]
    assert CONFIG["plugin_opt_sync"] == ["full"]
    assert "persistence" not in CONFIG and "autosave_interval" not in CONFIG, "2.1 refuses a plugin beside them"
    native = native_defaults()
    assert native["persistence"] == ["true"] and "global_plugin" not in native


def test_producers_may_only_publish_and_the_worker_may_only_receive_events() -> None:
    rules = acl_rules()
    # The worker's only write is its probe, on the topic it is configured to use; producers may not forge one.
    probe_topic = compose.environment("ingest-worker", DUMMY).get("EVENTPIPE_PROBE_TOPIC", Settings().probe_topic)
    assert rules["producer"] == [("deny", probe_topic), ("write", "events/#")]
    assert rules["ingest"] == [("read", "events/#"), ("write", probe_topic)]
    assert rules["exporter"] == [("read", "$SYS/#")]


def test_every_acl_user_gets_a_password_from_the_environment() -> None:
    # entrypoint.sh refuses to start if one is missing; compose must therefore pass each one, required.
    environment = compose.service("mosquitto")["environment"]
    for user in acl_rules():
        variable = f"MQTT_{user.upper().replace('-', '_')}_PASSWORD"
        assert str(environment.get(variable, "")).startswith(f"${{{variable}:?"), f"{user}: {variable}"


def test_the_clients_in_compose_use_the_users_meant_for_them() -> None:
    worker = compose.environment("ingest-worker", DUMMY)["EVENTPIPE_MQTT_URL"]
    assert worker.startswith("mqtt://ingest:")
    exporter = compose.environment("mosquitto-exporter", DUMMY)["EVENTPIPE_MQTT_URL"]
    assert exporter.startswith("mqtt://exporter:")
    healthcheck = " ".join(compose.service("mosquitto")["healthcheck"]["test"])
    assert "-u exporter" in healthcheck


def test_no_producer_can_take_the_exporters_connection_by_its_client_id() -> None:
    # With `MQTT_CLIENT_ID: eventpipe-mosquitto-exporter`, a producer connecting under that id had the broker
    # close the exporter's connection, 15 times in 30 s. `eventpipe broker-metrics` draws a random id at each
    # connection (stack.statistics), and no setting gives it a fixed one.
    exporter = compose.service("mosquitto-exporter")
    assert exporter["command"] == ["broker-metrics"]
    assert not {"EVENTPIPE_MQTT_CLIENT_ID", "MQTT_CLIENT_ID"} & set(compose.environment("mosquitto-exporter", DUMMY))


def test_the_exporter_reads_and_keeps_short_the_log_file_the_broker_writes() -> None:
    # Mosquitto counts packets refused or dropped for their size nowhere but its log (EventpipeOversizePackets).
    # A file, not the log topics: those made each connection three messages queued for the exporter.
    logged = directives((MOSQUITTO / "mosquitto.conf").read_text())["log_dest"]
    assert "topic" not in logged
    (path,) = [value.split(" ", 1)[1] for value in logged if value.startswith("file ")]
    exporter = compose.service("mosquitto-exporter")
    assert compose.environment("mosquitto-exporter", DUMMY)["EVENTPIPE_BROKER_LOG_FILE"] == path
    folder = str(Path(path).parent)
    (volume,) = [mount.split(":")[0] for mount in exporter["volumes"] if mount.split(":")[1] == folder]
    assert f"{volume}:{folder}" in compose.service("mosquitto")["volumes"]
    # The broker's user, as the entrypoint makes it own the folder: the file is 0600, and emptied past 64 MiB.
    assert exporter["user"] == "1883:1883"
    assert folder in (MOSQUITTO / "entrypoint.sh").read_text().split("chown -R mosquitto:mosquitto", 1)[1]


def test_only_the_exporter_reads_the_brokers_statistics() -> None:
    readers = {
        user
        for user, rules in acl_rules().items()
        if any(access in ("read", "readwrite") and topic.startswith("$SYS") for access, topic in rules)
    }
    assert readers == {"exporter"}


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(MOSQUITTO / "acl", config)
    variables = {"PATH": os.environ["PATH"], "MOSQUITTO_CONFIG_DIR": str(config), "MOSQUITTO_RUN_DIR": str(tmp_path)}
    return subprocess.run(
        ["sh", str(MOSQUITTO / "entrypoint.sh")],
        env={**variables, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_broker_refuses_to_start_when_a_user_has_no_password(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, {"MQTT_PRODUCER_PASSWORD": "p", "MQTT_INGEST_PASSWORD": "i"})
    assert done.returncode == 1
    assert "MQTT_EXPORTER_PASSWORD is not set" in done.stderr


# The files above, run by the local mosquitto (what the rest of the suite uses): only the listener,
# the paths, the log destination and the user it runs as differ from the container.


class Broker:
    def __init__(self, directory: Path, passwords: dict[str, str], max_connections: int | None = None) -> None:
        self.port = free_port()
        # The TLS listener, with a certificate from a local CA as scripts/init-secrets.sh makes one.
        self.tls_port = free_port()
        self.tls = local_authority(directory / "certs")
        passwd = directory / "passwd"
        for user, password in passwords.items():
            subprocess.run(
                ["mosquitto_passwd", *([] if passwd.exists() else ["-c"]), "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        shutil.copy(MOSQUITTO / "acl", directory / "acl")
        text = compose.native_persistence((MOSQUITTO / "mosquitto.conf").read_text(), compose.persist_plugin())
        text = re.sub(r"(?m)^listener 1883 .*$", f"listener {self.port} 127.0.0.1", text)
        text = re.sub(r"(?m)^listener 8883 .*$", f"listener {self.tls_port} 127.0.0.1", text)
        text = text.replace("/mosquitto/run/", f"{directory}/").replace("/mosquitto/data/", f"{directory}/")
        text = text.replace("/mosquitto/certs/", f"{directory / 'certs'}/")
        # Its log file where compose has it, on the volume the exporter shares: here, the directory.
        self.log_file = directory / "mosquitto.log"
        text = text.replace("log_dest stdout\n", "").replace("/mosquitto/log/", f"{directory}/")
        if max_connections is not None:
            text, replaced = re.subn(r"(?m)^max_connections \d+$", f"max_connections {max_connections}", text)
            assert replaced == 1, "mosquitto/mosquitto.conf has no max_connections line"
        (directory / "mosquitto.conf").write_text(f"{text}\nuser {effective_user()}\n")
        self.process = subprocess.Popen(
            [str(find_binary()), "-c", str(directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.connect("", "").rc is not None or self.process.poll() is not None, timeout=10)

    def connect(self, user: str, password: str, *, tls: bool = False, ca: Path | None = None) -> Session:
        """On the plain listener, or on the TLS one trusting `ca` (None: the system's CAs)."""
        return Session(self.tls_port if tls else self.port, user, password, tls=tls, ca=ca)

    def connect_as(self, client_id: str) -> None:
        """A producer under `client_id` connects and leaves: two lines of the log name it."""
        session = Session(self.port, "producer", PASSWORDS["producer"], client_id=client_id)
        assert session.accepted
        session.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Session:
    """One MQTT v5 client: its CONNACK reason, what it received, the PUBACK reasons of what it sent."""

    def __init__(
        self,
        port: int,
        user: str,
        password: str,
        *,
        tls: bool = False,
        ca: Path | None = None,
        client_id: str | None = None,
    ) -> None:
        client_id = client_id or f"t-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set(ca_certs=str(ca) if ca else None)
        self.rc: ReasonCode | None = None
        self.received: list[str] = []
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, message: self.received.append(message.topic)
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        try:
            self.client.connect("127.0.0.1", port, keepalive=10)
        except OSError:
            self.rc = None
            return
        self.client.loop_start()
        wait_until(lambda: self.rc is not None, timeout=5, what="CONNACK")

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None) -> None:
        self.rc = rc

    @property
    def accepted(self) -> bool:
        return self.rc is not None and not self.rc.is_failure

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)

    def publish(self, topic: str) -> None:
        # Acknowledged either way: a refused publish gets a PUBACK with "not authorized".
        self.client.publish(topic, b'{"event_type": "probe"}', qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


PASSWORDS = {"producer": "producer-pw", "ingest": "ingest-pw", "exporter": "exporter-pw"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if find_binary() is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("these tests run mosquitto on mosquitto/'s files: apt-get install mosquitto", pytrace=False)
    running = Broker(tmp_path_factory.mktemp("mosquitto"), PASSWORDS)
    yield running
    running.stop()


def test_anonymous_and_wrong_passwords_are_refused(broker: Broker) -> None:
    assert not broker.connect("", "").accepted
    assert not broker.connect("producer", "wrong").accepted
    assert broker.connect("producer", PASSWORDS["producer"]).accepted


def test_events_flow_from_producer_to_worker_and_nowhere_else(broker: Broker) -> None:
    worker = broker.connect("ingest", PASSWORDS["ingest"])
    worker.subscribe("$share/eventpipe/events/#")
    snoop = broker.connect("producer", PASSWORDS["producer"])
    snoop.subscribe("#")
    producer = broker.connect("producer", PASSWORDS["producer"])
    producer.publish("events/purchase")
    wait_until(lambda: worker.received == ["events/purchase"], timeout=5, what="the worker to get the event")
    # The worker may not publish but its probe (its messages would be stored as events), producers may not read.
    worker.publish("events/forged")
    worker.publish("events/_probe")
    producer.publish("elsewhere/x")
    producer.publish("events/marker")
    wait_until(lambda: "events/marker" in worker.received, timeout=5, what="the marker")
    assert worker.received == ["events/purchase", "events/_probe", "events/marker"]
    assert snoop.received == []
    for session in (worker, snoop, producer):
        session.close()


def test_producers_reach_the_tls_listener_only_over_tls_with_the_ca(broker: Broker) -> None:
    # 8883 is the listener compose publishes; the same users and ACL hold there.
    worker = broker.connect("ingest", PASSWORDS["ingest"])
    worker.subscribe("$share/eventpipe/events/#")
    producer = broker.connect("producer", PASSWORDS["producer"], tls=True, ca=broker.tls.ca)
    assert producer.accepted
    producer.publish("events/over-tls")
    wait_until(lambda: "events/over-tls" in worker.received, timeout=5, what="the event sent over TLS")
    assert not broker.connect("producer", PASSWORDS["producer"], tls=True, ca=None).accepted, "no CA, no trust"
    # The same plain CONNECT gets a CONNACK (refusing the anonymous) on 1883, and no answer at all on 8883.
    assert plain_answer(broker.port).startswith(b"\x20")
    assert plain_answer(broker.tls_port) == b"", "plain MQTT on the TLS listener"
    assert not broker.connect("", "", tls=True, ca=broker.tls.ca).accepted, "anonymous over TLS"
    assert not broker.connect("producer", "wrong", tls=True, ca=broker.tls.ca).accepted
    for session in (worker, producer):
        session.close()


def plain_answer(port: int) -> bytes:
    """What a broker answers a plain MQTT 3.1.1 CONNECT (clean session, empty client id) with."""
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(connect)
        try:
            return sock.recv(16)
        except ConnectionResetError:
            return b""


LIMIT = int(CONFIG["max_packet_size"][0])


def closes_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass  # a DISCONNECT first, for an MQTT 5 client
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_a_connect_over_the_limit_is_refused_on_its_header_before_any_password(broker: Broker) -> None:
    # Without the limit, an anonymous socket could make the broker take up to 256 MiB of CONNECT.
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(connect_packet("big", None, None, declared=LIMIT)[:5])
        assert closes_within(sock, 5), "the broker waits for the rest of an oversize CONNECT"


def test_a_publish_over_the_limit_is_refused_and_one_under_it_is_delivered(broker: Broker) -> None:
    worker = broker.connect("ingest", PASSWORDS["ingest"])
    worker.subscribe("$share/eventpipe/events/#")
    url = f"mqtt://producer:{PASSWORDS['producer']}@127.0.0.1:{broker.port}"
    # The limit counts the type byte and the rest after the length: topic, packet id, property length, payload.
    largest = LIMIT - 1 - (2 + len("events/big")) - 2 - 1
    over = stream_publish(url, "events/big", largest + 1)
    assert (over.packet, over.reason) == ("disconnect", 0x95), over  # Packet too large
    under = stream_publish(url, "events/big", largest)
    assert (under.packet, under.reason) == ("puback", 0), under
    wait_until(lambda: worker.received == ["events/big"], timeout=5, what="the message under the limit")
    worker.close()


def listener_options() -> dict[str, dict[str, str]]:
    """port -> the options that follow its `listener` line, up to the next listener or global option."""
    found: dict[str, dict[str, str]] = {}
    port = ""
    for line in (MOSQUITTO / "mosquitto.conf").read_text().splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "listener":
            port = value.split()[0]
            found[port] = {}
        elif key in ("certfile", "keyfile", "max_connections", "max_topic_alias", "max_qos") and port:
            found[port][key] = value
        elif key and not key.startswith("#"):
            port = ""
    return found


def test_no_listener_takes_topic_aliases_here_or_natively(tmp_path: Path) -> None:
    # An aliased topic fits the packet limit on the way in and not on the way to the worker, which the
    # broker then drops after its PUBACK (tests/integration/test_packet.py shows it on a real broker).
    assert {port: options.get("max_topic_alias") for port, options in listener_options().items()} == {
        "1883": "0",
        "8883": "0",
    }
    native = render_config(1883, tmp_path, 40_000, max_payload_bytes=65_536, session_expiry_s=SESSION_EXPIRY_S)
    assert "\nmax_topic_alias 0\n" in native


def test_no_listener_takes_qos_2_here_or_natively(broker: Broker, tmp_path: Path) -> None:
    # README's contract is QoS 1; a QoS 2 message is held until its publisher releases it, so a producer
    # that never did made the broker hold up to its window (40,000 messages) per connection.
    assert {port: options.get("max_qos") for port, options in listener_options().items()} == {"1883": "1", "8883": "1"}
    assert "\nmax_qos 1\n" in render_config(
        1883, tmp_path, 40_000, max_payload_bytes=65_536, session_expiry_s=SESSION_EXPIRY_S
    )
    producer = f"mqtt://producer:{PASSWORDS['producer']}@127.0.0.1:{broker.port}"
    packet, body = unreleased(producer, 100)
    assert (packet, body[:1]) == (DISCONNECT, b"\x9b"), "0x9B: QoS not supported"


def test_only_the_producers_listener_caps_its_sockets_and_the_broker_has_files_for_more() -> None:
    # A cap on 1883 would let anyone who fills it lock the workers out; none on 8883, idle sockets
    # (which Mosquitto keeps for 90 s, longer if they trickle) could fill the broker's memory.
    options = listener_options()
    assert "max_connections" not in options["1883"]
    cap = int(options["8883"]["max_connections"])
    assert 0 < cap <= 10_000
    nofile = compose.service("mosquitto")["ulimits"]["nofile"]
    assert cap + 1_000 <= min(nofile["soft"], nofile["hard"])


def test_idle_sockets_fill_the_producers_listener_not_the_workers(tmp_path: Path) -> None:
    capped = Broker(tmp_path, PASSWORDS, max_connections=3)
    idle: list[socket.socket] = []
    try:
        idle = [socket.create_connection(("127.0.0.1", capped.tls_port)) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", capped.tls_port)) as extra:
            assert closes_within(extra, 5), "a socket past max_connections was kept"
        worker = capped.connect("ingest", PASSWORDS["ingest"])
        assert worker.accepted, "the workers' listener refused the worker"
        worker.close()
    finally:
        for sock in idle:
            sock.close()
        capped.stop()


def exported(port: int) -> dict[str, float] | None:
    """The exporter's samples by name and labels, or None while it answers no 200 (503: not subscribed)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return {
        sample.name + "".join(f'{{{k}="{v}"}}' for k, v in sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Exporter:
    """`eventpipe broker-metrics` on `broker`, as compose runs it: the exporter user, the broker's log file."""

    def __init__(self, broker: Broker, directory: Path) -> None:
        self.port = free_port()
        self.environment = {
            **os.environ,
            "EVENTPIPE_MQTT_URL": f"mqtt://exporter:{PASSWORDS['exporter']}@127.0.0.1:{broker.port}",
            "EVENTPIPE_BROKER_LOG_FILE": str(broker.log_file),
            "EVENTPIPE_METRICS_HOST": "127.0.0.1",
            "EVENTPIPE_METRICS_PORT": str(self.port),
        }
        self.log = directory / f"exporter-{self.port}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*EVENTPIPE, "broker-metrics"], env=self.environment, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(self.healthy, timeout=30, what="the exporter's healthcheck to pass")

    def healthy(self) -> bool:
        check = subprocess.run([*EVENTPIPE, "healthcheck", "broker-metrics"], env=self.environment, check=False)
        return check.returncode == 0

    def refused(self) -> float | None:
        return (exported(self.port) or {}).get('eventpipe_broker_oversize_packets_total{action="refused"}')

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(10)
        said = self.log.read_text()
        assert self.process.returncode == 0, said
        return said


EVENTPIPE = [sys.executable, "-m", "eventpipe.cli.main"]


def test_the_exporter_counts_what_the_broker_refuses_for_size_and_serves_its_statistics(
    broker: Broker, tmp_path: Path
) -> None:
    # EventpipeOversizePackets had no metric in compose: Mosquitto counts such packets nowhere but its log,
    # which went to the container's stdout only. Its exporter, as compose runs it, reads the log's file.
    exporter = Exporter(broker, tmp_path)
    try:
        # The broker retains its $SYS values: they come at once, with no tick to wait for.
        before = wait_until(
            lambda: (found := exported(exporter.port)) and "broker_clients_connected" in found and found,
            timeout=15,
            what="the broker's statistics",
        )
        assert before['eventpipe_broker_oversize_packets_total{action="refused"}'] == 0
        url = f"mqtt://producer:{PASSWORDS['producer']}@127.0.0.1:{broker.port}"
        over = stream_publish(url, "events/big", LIMIT)
        assert (over.packet, over.reason) == ("disconnect", 0x95), over
        wait_until(lambda: exporter.refused() == 1, timeout=10, what="the refused packet counted")
        assert (exported(exporter.port) or {})['eventpipe_broker_oversize_packets_total{action="dropped"}'] == 0
        # Mosquitto cuts a line at 999 bytes: a client id made to end the cut line with the refusal's words
        # passed for one (three clean connections counted as three refusals).
        ending = " disconnected due to oversize packet."
        # "<time>: Client <id> disconnected.": the id sized so that the cut falls right after `ending`.
        forged = "A" * (999 - len(f"{int(time.time())}: Client ") - len(ending)) + ending + "B" * 40
        broker.connect_as(forged)
        wait_until(
            lambda: broker.log_file.read_bytes().count(forged[:100].encode()) >= 2, timeout=5, what="its log lines"
        )
        time.sleep(1)  # two scrapes' worth
        assert exporter.refused() == 1
    finally:
        said = exporter.stop()
    assert exporter.refused() is None
    # It holds nothing to flush or acknowledge: its stop says what it does (it said the worker's words).
    assert "SIGTERM received: stopping" in said
    # A new exporter counts from its own start: a restart shows no increase of lines an earlier one counted.
    again = Exporter(broker, tmp_path)
    try:
        assert again.refused() == 0
    finally:
        again.stop()


def test_the_exporter_refuses_a_log_it_cannot_use_and_names_the_variable(tmp_path: Path) -> None:
    # Run as another user than the broker's, it would count nothing and say nothing: it stops at its start.
    environment = {
        **os.environ,
        "EVENTPIPE_MQTT_URL": "mqtt://exporter:secret@127.0.0.1:1",
        "EVENTPIPE_BROKER_LOG_FILE": str(tmp_path),  # a folder: no file it can read and write
        "EVENTPIPE_METRICS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [*EVENTPIPE, "broker-metrics"], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot read and write the broker's log {tmp_path} (EVENTPIPE_BROKER_LOG_FILE)" in done.stderr
    assert "secret" not in done.stderr
