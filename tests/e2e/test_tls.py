"""`eventpipe up --tls` as a user runs it: MQTT over TLS and HTTPS only, checked against its own CA.

Each attack on the transport is made for real: plain MQTT and plain HTTP on the TLS ports, clients that
do not hold the CA, and an observer on the wire (a TCP relay that keeps every byte it passes)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from eventpipe.api.certificate import NAME as EXPIRY
from eventpipe.api.certificate import expiry_s
from eventpipe.telemetry.exporter import API_PATH
from tests.support.stack import Up, count_rows, eventpipe_command, run_eventpipe
from tests.support.terminal import finished, on_terminal, read_terminal
from tests.support.wait import wait_until


class Relay:
    """A TCP relay from a free port to 127.0.0.1:`port`, keeping what it passes: what an observer on the wire sees."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.seen = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.seen += data
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()


def start_tls(stacks: list[Up], data_dir: Path, prometheus: bool = False, cwd: Path | None = None) -> tuple[Up, str]:
    """`eventpipe up --tls` once ready, and the API key it generated."""
    up = Up(data_dir, "--tls", prometheus=prometheus, cwd=cwd)
    stacks.append(up)
    ready = up.wait_ready()
    assert f"mqtt=mqtts://127.0.0.1:{up.mqtt_port}" in ready and f"api=https://127.0.0.1:{up.api_port}" in ready
    key = up.generated_key
    return up, key


def get_json(url: str, key: str, ca: Path | None) -> dict[str, object]:
    """A GET over HTTPS trusting only `ca` (None: the system's CAs, as a client without it would)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310 - https, ours
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310 - https, ours
        result: dict[str, object] = json.loads(response.read())
        return result


def publish(url: str, count: int, ca: Path | None) -> tuple[int, str]:
    done = run_eventpipe("publish", "--mqtt-url", url, "--count", str(count), *(["--ca-file", str(ca)] if ca else []))
    return done.returncode, done.stdout + done.stderr


def test_up_tls_takes_only_tls_with_its_ca_and_keeps_the_ca_across_restarts(tmp_path: Path, stacks: list[Up]) -> None:
    data = tmp_path / "data"
    # Given relative, as README's `--data-dir .eventpipe`: the files it names (the CA) are found from elsewhere.
    up, key = start_tls(stacks, Path("data"), cwd=tmp_path)
    tls = data / "tls"
    ca = tls / "ca.pem"
    assert f"clients trust the local CA {ca.resolve()}" in up.output()
    assert {stat.S_IMODE((tls / name).stat().st_mode) for name in ("ca-key.pem", "server-key.pem")} == {0o600}

    # Producers over MQTT over TLS, trusting the CA, seen from the wire.
    wire = Relay(up.mqtt_port)
    code, output = publish(f"mqtts://127.0.0.1:{wire.port}", 500, ca)
    assert code == 0 and "500 acknowledged" in output, output
    wait_until(lambda: up.metric("eventpipe_events_stored_total") == 500, what="500 stored")
    assert len(wire.seen) > 500 * 100, "the relay carried the traffic"
    assert b"events/" not in wire.seen and b"user_id" not in wire.seen, "topics or payloads readable on the wire"
    wire.close()

    # Third parties over HTTPS, trusting the CA, seen from the wire.
    wire = Relay(up.api_port)
    answer = get_json(f"https://127.0.0.1:{wire.port}/stats/event-types", key, ca)
    assert answer["total"] == 500
    assert len(wire.seen) > 1000
    assert key.encode() not in wire.seen and b"page_view" not in wire.seen, "the key or the answer readable"
    wire.close()
    assert get_json(f"https://localhost:{up.api_port}/healthz", key, ca) == {"status": "ok"}

    # Plain MQTT on the TLS port: the broker closes the connection, nothing is taken.
    code, output = publish(f"mqtt://127.0.0.1:{up.mqtt_port}", 5, None)
    assert code == 2 and "closed the connection before accepting it" in output, output
    # A client without the CA does not trust the broker, and sends nothing.
    code, output = publish(f"mqtts://127.0.0.1:{up.mqtt_port}", 5, None)
    assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in output, output
    # Plain HTTP on the HTTPS port gets no answer at all.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{up.api_port}/healthz", timeout=5)
    # An HTTPS client without the CA refuses the server.
    with pytest.raises(urllib.error.URLError) as refused:
        get_json(f"https://127.0.0.1:{up.api_port}/healthz", key, None)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)

    # When the certificate it serves ends, on the metrics port: no scrape goes to the HTTPS port to fail there.
    served_until = expiry_s(tls / "server.pem")
    assert served_until is not None and served_until > time.time() + 300 * 86400, "the certificate `up` made"
    assert up.metric(EXPIRY, API_PATH) == served_until
    assert up.stop() == 0, up.output()
    files = {path.name: path.read_bytes() for path in tls.glob("*.pem")}

    # A restart keeps the CA and the certificate: clients holding ca.pem go on as before.
    again, key = start_tls(stacks, data)
    assert {path.name: path.read_bytes() for path in tls.glob("*.pem")} == files
    code, output = publish(f"mqtts://localhost:{again.mqtt_port}", 7, ca)
    assert code == 0 and "7 acknowledged" in output, output
    wait_until(lambda: again.metric("eventpipe_events_stored_total") == 7, what="7 more stored")
    assert get_json(f"https://127.0.0.1:{again.api_port}/stats/event-types", key, ca)["total"] == 507
    assert again.stop() == 0, again.output()
    assert count_rows(data) == 507, "only what came over TLS was stored"

    # The operator's own certificate, without --tls: its end is reported too.
    own = {
        "EVENTPIPE_API_TLS_CERT_FILE": str(tls / "server.pem"),
        "EVENTPIPE_API_TLS_KEY_FILE": str(tls / "server-key.pem"),
    }
    mine = Up(data, env=own)
    stacks.append(mine)
    assert f"api=https://127.0.0.1:{mine.api_port}" in mine.wait_ready()
    assert mine.metric(EXPIRY, API_PATH) == served_until
    assert mine.stop() == 0, mine.output()


def test_an_encrypted_api_key_file_is_refused_at_once_naming_its_variable(tmp_path: Path) -> None:
    """A key with a pass phrase: `eventpipe api` asked for it on the terminal and waited there (under a
    supervisor, with no terminal, it said only "[Errno 22] Invalid argument"). It runs on a terminal here."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    # Without -noenc (-nodes), openssl encrypts the key with the -passout pass phrase.
    request = ["req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(
        ["openssl", *request, "-keyout", str(key), "-out", str(cert), "-passout", "pass:s3cret-phrase"],
        capture_output=True,
        check=True,
    )
    env = {
        **os.environ,
        "EVENTPIPE_DATA_DIR": str(tmp_path / "data"),
        "EVENTPIPE_API_PORT": "0",  # never listened on: the key stops it first
        "EVENTPIPE_API_KEYS": "k" * 32,
        "EVENTPIPE_API_TLS_CERT_FILE": str(cert),
        "EVENTPIPE_API_TLS_KEY_FILE": str(key),
    }
    terminal, process = on_terminal([*eventpipe_command(), "api"], env)
    code = finished(process, 30)
    output = read_terminal(terminal)
    assert code is not None, f"still running, its terminal shows: {output!r}"
    assert code == 2, output
    assert f"EVENTPIPE_API_TLS_KEY_FILE {key} is encrypted: give an unencrypted key" in output, output
    assert "Enter PEM pass phrase" not in output
