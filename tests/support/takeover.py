"""The session takeover of issue 13, repeatable: a producer streams QoS 1 events while an intruder connects
with a worker's client id, and the test counts the acknowledged events that never reach the store.

Also the compose broker run natively: mosquitto/mosquitto.conf, acl and the password file built by
mosquitto/entrypoint.sh itself, with only the paths, the listener and the user adapted.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.port import free_port
from eventpipe.stack.broker import effective_user
from tests.support import compose
from tests.support.stream import Stream
from tests.support.wait import wait_until

MOSQUITTO = compose.REPO / "mosquitto"
# The stream: at 1,000 events/s, a second without the worker's subscription is about 1,000 lost.
COUNT, RATE = 3_000, 1_000
HOLD_S = 1.5


# The compose users' passwords, made per test session as scripts/init-secrets.sh makes them.
PASSWORDS = {user: secrets.token_hex(16) for user in ("producer", "ingest", "exporter")}


class Intruder:
    """A client that presents `client_id`. Clean start: the broker ends the session it takes, subscription
    and all. Resumed: it inherits the session and what is queued for it, and acknowledges what it gets."""

    def __init__(self, url: str, client_id: str, clean_start: bool, expiry_s: int = 0, bridge: bool = False) -> None:
        """`bridge`: MQTT 3.1.1 with the protocol level's bridge bit, which Mosquitto logs in other words."""
        self._address = MqttAddress.parse(url)
        self._clean_start = clean_start
        self._expiry_s = expiry_s
        self._bridge = bridge
        if bridge:
            self.client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_start, protocol=mqtt.MQTTv311
            )
            self.client.enable_bridge_mode()
        else:
            self.client = make_client(self._address, client_id)
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.received = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, _c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: object) -> None:
        self.connack = rc
        self.session_present = self.session_present or flags.session_present

    def _on_message(self, _c: mqtt.Client, _u: object, _message: mqtt.MQTTMessage) -> None:
        self.received += 1

    def hold(self, seconds: float) -> None:
        """Connect, stay `seconds` (paho reconnects it if the worker takes the id back), then leave."""
        if self._bridge:
            self.client.connect(self._address.host, self._address.port, keepalive=10)
        else:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._expiry_s
            self.client.connect(
                self._address.host, self._address.port, keepalive=10, clean_start=self._clean_start, properties=props
            )
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, timeout=5, what="the intruder's CONNACK")
        time.sleep(seconds)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure


def attack(
    stream_url: str,
    intruder_url: str,
    client_id: str,
    clean_start: bool,
    hold_s: float = HOLD_S,
    expiry_s: int = 0,
    bridge: bool = False,
) -> tuple[Stream, set[str], Intruder]:
    """Stream COUNT events at RATE/s; a third of the way in, an intruder holds `client_id` for `hold_s`,
    keeping the session `expiry_s` after it leaves. Returns the stream, the ids the broker acknowledged to
    the producer, and the intruder."""
    stream = Stream(stream_url, COUNT, RATE)
    stream.start()
    wait_until(lambda: stream.published >= COUNT // 3, timeout=30, what="the stream under way")
    intruder = Intruder(intruder_url, client_id, clean_start, expiry_s, bridge)
    intruder.hold(hold_s)
    return stream, stream.acknowledged(), intruder


def settle(stored: Callable[[], float], in_flight: Callable[[], float], expected: int, quiet_s: float = 3.0) -> None:
    """Wait until `expected` events are stored, or until nothing more arrives and nothing is held (a loss)."""
    last, since = stored(), time.monotonic()
    deadline = since + 90
    while time.monotonic() < deadline:
        now = stored()
        if now >= expected:
            return
        if now != last:
            last, since = now, time.monotonic()
        elif in_flight() == 0 and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)
    raise AssertionError(f"the store never settled: {last} of {expected} stored")


class ComposeBroker:
    """mosquitto/'s config run by mosquitto/entrypoint.sh as the container runs it, on this machine:
    the password file comes from MQTT_<USER>_PASSWORD as in compose; only the listener (a free port on
    loopback), the paths, the log file and the user Mosquitto runs as differ. Stopped by PID. `binary`: a
    Mosquitto 2.1 to run instead of /usr/sbin/mosquitto (Debian's 2.0 here), with the image's persistence
    (compose.PLUGIN_VARIABLE names its plugin); 2.0 gets its snapshots instead."""

    def __init__(self, directory: Path, passwords: dict[str, str], binary: str | None = None) -> None:
        self.port = free_port()
        self.passwords = passwords
        config, run, data, bin_dir = (directory / name for name in ("config", "run", "data", "bin"))
        for path in (config, run, data, bin_dir):
            path.mkdir(parents=True)
        shutil.copy(MOSQUITTO / "acl", config / "acl")
        plugin = None if binary is None else compose.persist_plugin()
        text = compose.native_persistence((MOSQUITTO / "mosquitto.conf").read_text(), plugin)
        text, listeners = re.subn(r"(?m)^listener 1883 .*$", f"listener {self.port} 127.0.0.1", text)
        assert listeners == 1, "mosquitto/mosquitto.conf has no plain listener on 1883"
        # The TLS listener takes the same users and ACL (tests/static/test_mosquitto.py runs it);
        # the attack needs one listener, so its lines go, certificate, key and connection cap included
        # (left behind, an option of that listener would apply to the one before it).
        text, tls = re.subn(
            r"(?m)^listener 8883 .*\n"
            r"(?:(?:#|(?:certfile|keyfile|cafile|tls_version|max_connections|max_topic_alias|max_qos) ).*\n)*",
            "",
            text,
        )
        assert tls == 1, "mosquitto/mosquitto.conf has no TLS listener on 8883"
        text = text.replace("/mosquitto/run/", f"{run}/").replace("/mosquitto/data/", f"{data}/")
        # Its log file where compose has it (on the exporter's volume): here, the directory.
        text = text.replace("log_dest stdout\n", "").replace("/mosquitto/log/", f"{directory}/")
        (config / "mosquitto.conf").write_text(f"{text}\nuser {effective_user()}\n")
        # The entrypoint hands its files to the image's mosquitto user; here they stay with this one.
        (bin_dir / "chown").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "chown").chmod(0o755)
        self.log_file = directory / "mosquitto.log"
        self._env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "MOSQUITTO_CONFIG_DIR": str(config),
            "MOSQUITTO_RUN_DIR": str(run),
            **({} if binary is None else {"MOSQUITTO_BINARY": binary}),
            **{f"MQTT_{user.upper().replace('-', '_')}_PASSWORD": pw for user, pw in passwords.items()},
        }
        self.start()

    def start(self) -> None:
        """Run the entrypoint, which execs the broker (one PID), on what the last run left in its data."""
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = subprocess.Popen(
            ["sh", str(MOSQUITTO / "entrypoint.sh")], env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(self._listening, timeout=10, what="the compose broker listening")

    def kill(self) -> None:
        """kill -9: the broker ends where it is, saving nothing more."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            why = self.process.stderr.read() if self.process.stderr else b""
            raise AssertionError(f"the compose broker exited: {why!r}")
        if not self.log_file.exists():
            return False
        with self.log_file.open("rb") as log:
            log.seek(self._log_start)
            return b"Opening ipv4 listen socket" in log.read()

    def url_for(self, user: str) -> str:
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
