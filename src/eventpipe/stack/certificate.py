"""The local certificate authority of `eventpipe up --tls`: a CA and a server certificate, kept across restarts.

Made with the `openssl` command (Mosquitto links the same library, and it is on
every machine that has Mosquitto), checked with Python's own TLS: a certificate
is kept only while a real handshake against the CA accepts it for every name it
must cover, and while it is not about to expire. Clients keep trusting `ca.pem`
across restarts and renewals; only a CA that itself expires is replaced.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from eventpipe.errors import ConfigError

log = logging.getLogger(__name__)

CA_DAYS = 3650
# The longest validity Apple's TLS clients accept (as scripts/init-secrets.sh).
SERVER_DAYS = 825
# Renewed at a start this close to expiry, so a long-running stack does not hit it.
RENEW_BEFORE_S = 30 * 24 * 3600
NAMES = ("localhost", "127.0.0.1", "::1")  # ::1: an API on `::` is reached there (port.address)

# Extensions that strict verifiers (Python 3.13's default VERIFY_X509_STRICT, Go) require.
EXTENSIONS = """\
[req]
distinguished_name = subject
[subject]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = {alt_names}
"""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # what clients trust (curl --cacert, mosquitto_pub --cafile, eventpipe publish --ca-file)
    cert: Path  # the server's certificate, served by the broker and the API
    key: Path  # its private key, 0600


def local_authority(directory: Path, names: tuple[str, ...] = NAMES) -> TlsFiles:
    """The CA and a server certificate for `names` under `directory`: reused while valid, else made."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError(
            "--tls makes its certificates with the openssl command, which is not on PATH "
            "(Debian/Ubuntu: apt-get install openssl)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    # Absolute: the broker's and Prometheus's configs name these files, and each reads a relative path its own way.
    directory = directory.resolve()
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    ca_key = directory / "ca-key.pem"
    for key in (ca_key, files.key):
        if key.exists():
            key.chmod(0o600)  # private, even if someone loosened it since
    if not _ca_usable(openssl, files.ca, ca_key):
        if files.ca.exists():
            log.warning(
                "the local CA in %s expires or is unusable: making a new one, which clients must trust", files.ca
            )
        _make_ca(openssl, directory, files.ca, ca_key)
    if not server_usable(files, names) or not _lasts(openssl, files.cert):
        _issue(openssl, directory, files, ca_key, names)
        log.info("issued a server certificate for %s signed by %s", ", ".join(names), files.ca)
    return files


def server_usable(files: TlsFiles, names: tuple[str, ...]) -> bool:
    """Whether a TLS client trusting only files.ca accepts files.cert, served with files.key, as every one of names."""
    if not (files.ca.exists() and files.cert.exists() and files.key.exists()):
        return False
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # Refuses a key that is not the certificate's, and one encrypted since it was made.
        server.load_cert_chain(files.cert, files.key, password=_no_pass_phrase)
        for name in names:
            client = ssl.create_default_context(cafile=str(files.ca))
            client.verify_flags |= ssl.VERIFY_X509_STRICT
            _handshake(server, client, name)
    except (OSError, ssl.SSLError, ValueError) as exc:
        log.info("the server certificate in %s is not usable (%s): issuing a new one", files.cert, exc)
        return False
    return True


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A whole TLS handshake in memory, no socket: raises what a real client would."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    back_in, back_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(back_in, outgoing, server_hostname=name)
    server_end = server.wrap_bio(incoming, back_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, end in (("client", client_end), ("server", server_end)):
            if not done[side]:
                try:
                    end.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        incoming.write(outgoing.read())
        back_in.write(back_out.read())
        if all(done.values()):
            return
    raise ssl.SSLError(f"the handshake as {name} did not complete")


def _ca_usable(openssl: str, ca: Path, ca_key: Path) -> bool:
    if not (ca.exists() and ca_key.exists()) or not _lasts(openssl, ca):
        return False
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(ca, ca_key, password=_no_pass_phrase)
    except (OSError, ssl.SSLError):
        return False
    return True


def _no_pass_phrase() -> str:
    # Called only for an encrypted key. Without it OpenSSL asked for the pass phrase on the terminal `up` runs
    # on, and waited there. Neither the broker nor the API could be given one: such a key is replaced.
    raise ssl.SSLError("the key is encrypted")


def _lasts(openssl: str, cert: Path) -> bool:
    """Valid for at least RENEW_BEFORE_S more (openssl x509 -checkend exits 0)."""
    done = _run([openssl, "x509", "-in", str(cert), "-noout", "-checkend", str(RENEW_BEFORE_S)], check=False)
    return done.returncode == 0


def _make_ca(openssl: str, directory: Path, ca: Path, ca_key: Path) -> None:
    _write_key(openssl, ca_key)
    subject = "/O=eventpipe/CN=eventpipe local CA"
    with _extensions(directory, NAMES) as config:
        make = [openssl, "req", "-new", "-x509", "-key", str(ca_key), "-subj", subject, "-config", config]
        _run([*make, "-extensions", "ca", "-days", str(CA_DAYS), "-sha256", "-out", str(ca)])
    ca.chmod(0o644)


def _issue(openssl: str, directory: Path, files: TlsFiles, ca_key: Path, names: tuple[str, ...]) -> None:
    _write_key(openssl, files.key)
    subject = f"/O=eventpipe/CN={names[0]}"
    with _extensions(directory, names) as config:
        request = _run([openssl, "req", "-new", "-key", str(files.key), "-subj", subject, "-config", config]).stdout
        sign = [openssl, "x509", "-req", "-CA", str(files.ca), "-CAkey", str(ca_key), "-extfile", config]
        validity = ["-set_serial", str(secrets.randbits(120)), "-days", str(SERVER_DAYS), "-sha256"]
        _run([*sign, "-extensions", "server", *validity, "-out", str(files.cert)], stdin=request)
    files.cert.chmod(0o644)


def _write_key(openssl: str, path: Path) -> None:
    """A new P-256 key, created 0600 before a byte is written, then moved into place."""
    pem = _run([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]).stdout
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    temporary.replace(path)


@contextmanager
def _extensions(directory: Path, names: tuple[str, ...]) -> Iterator[str]:
    """The openssl config, with `names` as subjectAltName, in a temporary file while it is used."""
    alt_names = ", ".join(f"IP:{name}" if _is_address(name) else f"DNS:{name}" for name in names)
    descriptor, path = tempfile.mkstemp(prefix=".openssl-", suffix=".cnf", dir=directory)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(EXTENSIONS.format(alt_names=alt_names))
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def _is_address(name: str) -> bool:
    try:
        ip_address(name)
    except ValueError:
        return False
    return True


def _run(argv: list[str], *, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=60)
    if check and done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"openssl {argv[1]} failed making the TLS certificates: {why[-1] if why else 'no output'}")
    return done
