"""TLS in the container stack: producers get MQTT over TLS (8883) and clients HTTPS, with the certificate
scripts/init-secrets.sh makes (or the operator's own), handed to each server by the one-shot `tls` service.
The broker's TLS listener itself is run on mosquitto/'s files in test_mosquitto.py."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path, PurePosixPath

import pytest
import yaml

from eventpipe.stack import certificate
from eventpipe.stack.certificate import TlsFiles, local_authority, server_usable
from tests.support import compose
from tests.support.dockerfile import API_DOCKERFILE, instructions
from tests.support.stack import run_eventpipe

DUMMY = {name: "x" for name in compose.required_variables()}
TLS_SCRIPT = compose.service("tls")["command"][0]


def mounts(service: str) -> dict[str, str]:
    """Target in the container -> source (a named volume, or a ./ path), for every volume of a service."""
    return {target: source for source, target, _options in compose.volumes(service)}


def listeners() -> dict[int, list[str]]:
    """mosquitto/mosquitto.conf's listeners by port, each with the directives that follow it."""
    found: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in (compose.REPO / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        if line.startswith("listener "):
            current = found.setdefault(int(line.split()[1]), [])
        elif line.strip() and not line.startswith("#") and current is not None:
            current.append(line.strip())
    return found


def installed(owner: str) -> tuple[str, str]:
    """(mode, directory) the tls service installs the certificate and key with, for `owner`."""
    match = re.search(
        rf"install -o {owner} -g \S+ -m (\d+) /in/server\.pem /in/server-key\.pem (\S+)/$", TLS_SCRIPT, re.M
    )
    assert match, f"the tls service does not install the certificate and key for {owner}"
    return match.group(1), match.group(2)


def test_only_mqtt_over_tls_is_published_on_the_host() -> None:
    published = [compose.interpolate(str(port), DUMMY) for port in compose.service("mosquitto")["ports"]]
    assert published == ["127.0.0.1:8883:8883"], "1883 (plain) must stay inside the compose network"
    assert set(listeners()) == {1883, 8883}


def test_the_broker_serves_tls_with_the_copy_the_tls_service_made_for_it() -> None:
    directives = [line.split() for line in listeners()[8883]]
    files = {words[0]: PurePosixPath(words[1]) for words in directives if words[0] in ("certfile", "keyfile")}
    assert set(files) == {"certfile", "keyfile"}, "the 8883 listener would speak plain MQTT"
    assert not any(line.startswith(("certfile", "keyfile")) for line in listeners()[1883])
    directory = str(files["certfile"].parent)
    assert files["certfile"].name == "server.pem" and files["keyfile"] == files["certfile"].parent / "server-key.pem"
    volume = mounts("mosquitto")[directory]
    mode, target = installed("mosquitto")
    assert mode == "0600"
    assert mounts("tls")[target] == volume, "the broker reads a volume the tls service does not write"
    assert compose.service("mosquitto")["depends_on"]["tls"]["condition"] == "service_completed_successfully"


def test_the_api_serves_https_with_the_copy_the_tls_service_made_for_its_user() -> None:
    env = compose.environment("api", DUMMY)
    cert, key = PurePosixPath(env["EVENTPIPE_API_TLS_CERT_FILE"]), PurePosixPath(env["EVENTPIPE_API_TLS_KEY_FILE"])
    assert (cert.name, key.name, cert.parent) == ("server.pem", "server-key.pem", key.parent)
    volume = mounts("api")[str(cert.parent)]
    image = instructions(API_DOCKERFILE)
    user = re.findall(r"(?m)^USER (\d+)", image)[-1]
    mode, target = installed(user)
    assert mode == "0600"
    assert mounts("tls")[target] == volume, "the API reads a volume the tls service does not write"
    assert compose.service("api")["depends_on"]["tls"]["condition"] == "service_completed_successfully"
    assert mounts("tls")["/in"] == "./secrets/tls"


def test_prometheus_scrapes_the_api_on_its_metrics_listener_not_on_the_port_partners_reach() -> None:
    # On port 8000 every partner's key read the metrics, which name every key and count its requests.
    config = yaml.safe_load((compose.REPO / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    environment = compose.environment("api", DUMMY)
    assert job["static_configs"][0]["targets"] == [f"api:{environment['EVENTPIPE_METRICS_PORT']}"]
    assert environment["EVENTPIPE_METRICS_PORT"] != environment["EVENTPIPE_API_PORT"]
    published = [compose.interpolate(str(port), DUMMY) for port in compose.service("api")["ports"]]
    assert all(not port.endswith(":" + environment["EVENTPIPE_METRICS_PORT"]) for port in published), published


@pytest.mark.parametrize("missing", ["server.pem", "server-key.pem", "ca.pem"])
def test_a_stack_missing_a_tls_file_stops_at_the_tls_service_saying_which(tmp_path: Path, missing: str) -> None:
    # Each file stops the stack here, named, rather than in a server or client that cannot read it.
    for name in {"server.pem", "server-key.pem", "ca.pem"} - {missing}:
        (tmp_path / name).write_text("x")
    script = compose.interpolate(TLS_SCRIPT, DUMMY)
    check = script[: script.index("install ")].replace("/in/", f"{tmp_path}/")  # the check, before any copy
    done = subprocess.run(["sh", "-c", check], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert f"tls: secrets/tls/{missing} is missing" in done.stderr


def test_the_readme_shows_clients_how_to_trust_the_ca() -> None:
    readme = (compose.REPO / "README.md").read_text()
    assert re.search(r"mosquitto_pub -h \S+ -p 8883 --cafile secrets/tls/ca\.pem", readme)
    assert "curl -s --cacert secrets/tls/ca.pem https://" in readme
    assert "--ca-file secrets/tls/ca.pem" in readme


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(compose.REPO / "scripts" / "init-secrets.sh", tmp_path / "scripts")
    shutil.copy(compose.REPO / ".env.example", tmp_path)
    return tmp_path


def init_secrets(checkout: Path, names: str = "") -> str:
    done = subprocess.run(
        ["sh", str(checkout / "scripts" / "init-secrets.sh")],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TLS_SERVER_NAMES": names},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def tls_files(checkout: Path) -> TlsFiles:
    tls = checkout / "secrets" / "tls"
    return TlsFiles(tls / "ca.pem", tls / "server.pem", tls / "server-key.pem")


def test_init_secrets_makes_a_certificate_for_every_name_clients_dial(checkout: Path) -> None:
    output = init_secrets(checkout, "events.example.test,203.0.113.7")
    files = tls_files(checkout)
    assert "made in" in output and "clients trust ca.pem" in output
    # The host's names for producers and curl, the service names for Prometheus and in-network clients.
    assert server_usable(files, ("localhost", "127.0.0.1", "mosquitto", "api", "events.example.test", "203.0.113.7"))
    assert not server_usable(files, ("elsewhere.example.test",))
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files.ca.parent.iterdir()}
    assert modes == {"ca.pem": 0o644, "server.pem": 0o644, "ca-key.pem": 0o600, "server-key.pem": 0o600}
    before = {path.name: path.read_bytes() for path in files.ca.parent.iterdir()}
    assert "nothing changed" in init_secrets(checkout) and "made in" not in init_secrets(checkout)
    assert {path.name: path.read_bytes() for path in files.ca.parent.iterdir()} == before


def test_init_secrets_keeps_the_operators_own_certificate(checkout: Path, tmp_path: Path) -> None:
    theirs = local_authority(tmp_path / "operator")
    tls = checkout / "secrets" / "tls"
    tls.mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server-key.pem"):  # their CA's key stays with them
        shutil.copy(theirs.ca.parent / name, tls / name)
    init_secrets(checkout)
    assert sorted(path.name for path in tls.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]
    assert (tls / "server.pem").read_bytes() == theirs.cert.read_bytes()


def test_init_secrets_renews_its_certificate_near_expiry_with_the_same_ca(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same file names as `eventpipe up --tls` uses: a certificate 10 days from its end.
    monkeypatch.setattr(certificate, "SERVER_DAYS", 10)
    files = local_authority(checkout / "secrets" / "tls")
    ca, expiring = files.ca.read_bytes(), files.cert.read_bytes()
    assert "a renewed server certificate" in init_secrets(checkout)
    assert files.ca.read_bytes() == ca and files.cert.read_bytes() != expiring
    assert server_usable(files, ("localhost", "mosquitto", "api"))


class Readyz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def https_readyz(tmp_path: Path) -> Iterator[tuple[int, TlsFiles]]:
    files = local_authority(tmp_path / "tls")
    server = HTTPServer(("127.0.0.1", 0), Readyz)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1]), files
    server.shutdown()


def test_the_api_healthcheck_speaks_https_when_the_api_does(https_readyz: tuple[int, TlsFiles]) -> None:
    port, files = https_readyz

    def check(env: dict[str, str]) -> int:
        outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
        return run_eventpipe("healthcheck", "api", env={**outside, **env}, timeout=30).returncode

    # As the API's container has them: the certificate and its key.
    tls = {"EVENTPIPE_API_TLS_CERT_FILE": str(files.cert), "EVENTPIPE_API_TLS_KEY_FILE": str(files.key)}
    assert check({"EVENTPIPE_API_PORT": str(port), **tls}) == 0
    assert check({"EVENTPIPE_API_PORT": str(port)}) == 1, "plain HTTP to an HTTPS API is no answer"
