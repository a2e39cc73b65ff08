"""The local CA of `eventpipe up --tls`: made once, reused while valid, renewed by the same CA, keys private.

Runs the real `openssl` command, and checks every certificate the way clients do: a TLS handshake
against ca.pem alone, for each name, with strict X.509 checks."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventpipe.api.certificate import Certificate
from eventpipe.stack import certificate
from eventpipe.stack.certificate import NAMES, TlsFiles, local_authority, server_usable
from tests.support.terminal import finished, on_terminal, read_terminal


def days_left(cert: Path) -> float:
    end = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-enddate"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (ssl.cert_time_to_seconds(end.split("=", 1)[1]) - time.time()) / 86400


def contents(files: TlsFiles) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in files.ca.parent.iterdir()}


def test_a_new_directory_gets_a_ca_and_a_certificate_clients_accept_for_every_name(tmp_path: Path) -> None:
    files = local_authority(tmp_path / "tls")
    assert files.ca == tmp_path / "tls" / "ca.pem"
    assert server_usable(files, NAMES)
    assert not server_usable(files, ("example.com",)), "a name the certificate does not carry"
    done = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(files.ca), str(files.cert)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "tls").iterdir()}
    assert modes == {"ca.pem": 0o644, "server.pem": 0o644, "ca-key.pem": 0o600, "server-key.pem": 0o600}
    assert days_left(files.cert) > 800


def test_a_restart_reuses_every_file(tmp_path: Path) -> None:
    first = local_authority(tmp_path)
    before = contents(first)
    assert contents(local_authority(tmp_path)) == before


def test_a_certificate_about_to_expire_is_renewed_by_the_same_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certificate, "SERVER_DAYS", 10)  # inside the 30 days before expiry that renew it
    files = local_authority(tmp_path)
    short = files.cert.read_bytes()
    assert days_left(files.cert) < 11
    monkeypatch.undo()
    ca = files.ca.read_bytes()
    local_authority(tmp_path)
    assert files.cert.read_bytes() != short
    assert files.ca.read_bytes() == ca, "clients keep trusting the same CA"
    assert days_left(files.cert) > 800
    assert server_usable(files, NAMES)


def test_a_key_that_is_not_the_certificates_gets_a_new_pair(tmp_path: Path) -> None:
    files = local_authority(tmp_path)
    ca = files.ca.read_bytes()
    files.key.write_bytes((tmp_path / "ca-key.pem").read_bytes())  # a valid key, but another one
    assert not server_usable(files, NAMES)
    local_authority(tmp_path)
    assert server_usable(files, NAMES)
    assert files.ca.read_bytes() == ca


def test_a_certificate_from_another_ca_is_replaced(tmp_path: Path) -> None:
    ours = local_authority(tmp_path / "ours")
    theirs = local_authority(tmp_path / "theirs")
    ours.cert.write_bytes(theirs.cert.read_bytes())
    ours.key.write_bytes(theirs.key.read_bytes())
    assert not server_usable(ours, NAMES)
    local_authority(tmp_path / "ours")
    assert server_usable(ours, NAMES)


def test_new_names_get_a_certificate_that_carries_them(tmp_path: Path) -> None:
    files = local_authority(tmp_path)
    names = (*NAMES, "events.example.test", "::1")
    assert not server_usable(files, names)
    local_authority(tmp_path, names)
    assert server_usable(files, names)


def test_an_expiring_or_keyless_ca_is_replaced_and_a_loosened_key_made_private_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certificate, "CA_DAYS", 10)
    files = local_authority(tmp_path)
    monkeypatch.undo()
    old_ca = files.ca.read_bytes()
    files.key.chmod(0o644)
    local_authority(tmp_path)
    assert files.ca.read_bytes() != old_ca, "a CA 10 days from its end is replaced"
    assert server_usable(files, NAMES), "and the certificate issued again under the new one"
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    renewed = files.ca.read_bytes()
    (tmp_path / "ca-key.pem").unlink()
    local_authority(tmp_path)
    assert files.ca.read_bytes() != renewed, "a CA whose key is gone cannot sign: replaced"
    assert server_usable(files, NAMES)


@pytest.mark.parametrize("which", ["server-key.pem", "ca-key.pem"])
def test_an_encrypted_key_is_replaced_without_asking_for_its_pass_phrase(tmp_path: Path, which: str) -> None:
    """Someone encrypted a key `up --tls` made: the check that it still fits asked for the pass phrase on the
    terminal `eventpipe up` runs on, and waited there. It is a key up cannot serve with: a new one is made."""
    files = local_authority(tmp_path)
    key = tmp_path / which
    encrypted = tmp_path / "encrypted.pem"
    encrypt = ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:s3cret-phrase", "-out", str(encrypted)]
    subprocess.run(encrypt, capture_output=True, check=True)
    encrypted.replace(key)
    assert b"ENCRYPTED" in key.read_bytes()
    program = "import pathlib, sys; from eventpipe.stack import certificate; "
    program += "certificate.local_authority(pathlib.Path(sys.argv[1]))"
    # On a terminal of its own, as a user's shell runs `up`: OpenSSL prompts there when it has one.
    terminal, process = on_terminal([sys.executable, "-c", program, str(tmp_path)])
    code = finished(process, 30)
    shown = read_terminal(terminal)
    assert code == 0, shown
    assert "pass phrase" not in shown
    assert b"ENCRYPTED" not in key.read_bytes()
    assert server_usable(files, NAMES)


def test_the_api_reports_when_the_certificate_it_serves_ends_and_nothing_it_cannot_read(tmp_path: Path) -> None:
    # Prometheus scrapes the API's metrics port, not its HTTPS one: nothing else says that this certificate ends.
    from prometheus_client import CollectorRegistry

    from eventpipe.api.certificate import NAME, Certificate

    files = local_authority(tmp_path / "tls")
    end = subprocess.run(
        ["openssl", "x509", "-in", str(files.cert), "-noout", "-enddate"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for cert_file, expected in (
        (files.cert, ssl.cert_time_to_seconds(end.split("=", 1)[1])),  # the server's, not its CA's (10 years)
        (None, None),  # plain HTTP
        (files.key, None),  # not a certificate: no made-up end (the start refuses such a pair anyway)
        (tmp_path / "gone.pem", None),
    ):
        registry = CollectorRegistry()
        registry.register(Certificate(cert_file))
        assert registry.get_sample_value(NAME) == expected, cert_file


def test_the_api_says_when_it_cannot_read_its_certificates_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No sample and no word: the alert that the certificate ends could never fire, and nobody knew.
    files = local_authority(tmp_path / "tls")
    served = Certificate(files.cert)
    assert [sample.value for family in served.collect() for sample in family.samples] == [
        pytest.approx(time.time() + days_left(files.cert) * 86400, abs=120)
    ]
    assert not caplog.records
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    unread = Certificate(garbled)
    assert [family.samples for family in unread.collect()] == [[]]
    assert [record.getMessage() for record in caplog.records] == [
        f"cannot read when the certificate in {garbled} ends (EVENTPIPE_API_TLS_CERT_FILE): "
        "EventpipeAPICertificateExpiring cannot warn of it; watch its end another way"
    ]
