"""Fetch Prometheus 3's promtool for the rule tests and print its path.

Compose runs Prometheus 3 (prom/prometheus:v3.5.0), `eventpipe up` whatever the host has (Debian 12's 2.42
in CI), and the two read a range differently: 3 leaves out the sample at its start, so an extrapolating
function gives another value on the same samples. The rules are tested under both. Debian 12 has no
promtool 3, so this takes Debian forky's as a file: the suite's index is checked against its signature
(gpgv, Debian's archive keyring), the package against the index, and it is unpacked under
.cache/promtool-3/. apt's sources are left alone. Run from the repository root; stdlib only, plus gpgv and
dpkg-deb, which every Debian has.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
# Debian's testing suite until it is released (2027), whose promtool is 3.5 today: its version may move
# until then, and the rule tests hold for any 3.x; a 4.x is refused, naming this line.
SUITE = "forky"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
TARGET = Path(".cache/promtool-3/promtool")


def major(binary: Path) -> int | None:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    found = re.search(r"version (\d+)\.", done.stdout + done.stderr)
    return int(found.group(1)) if done.returncode == 0 and found else None


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 (MIRROR's http URLs only)
        return bytes(answer.read())


def checked(data: bytes, sha256: str, what: str) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"promtool3: {what} does not match its checksum in Debian's signed index")
    return data


def release(work: Path) -> str:
    """The suite's Release, from InRelease once its signature holds."""
    signed = work / "InRelease"
    signed.write_bytes(fetch(f"{MIRROR}/dists/{SUITE}/InRelease"))
    plain = work / "Release"
    done = subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", KEYRING, "--output", str(plain), str(signed)],
        capture_output=True,
        text=True,
        check=False,
    )
    # As apt reads it: one valid signature by a key of the keyring, and none bad. gpgv's own status is not
    # enough: it fails when another signature is by a key this keyring lacks, as after Debian's next key.
    status = done.stdout.splitlines()
    valid = any(line.startswith("[GNUPG:] VALIDSIG ") for line in status)
    if not valid or any(line.startswith("[GNUPG:] BADSIG ") for line in status) or not plain.exists():
        sys.exit(f"promtool3: the signature of {SUITE}'s index does not hold ({KEYRING}):\n{done.stderr}")
    return plain.read_text()


def stanza(index: str, package: str) -> dict[str, str]:
    for block in index.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", block, re.MULTILINE))
        if fields.get("Package") == package:
            return fields
    sys.exit(f"promtool3: Debian {SUITE} has no {package} package")


def install(work: Path) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    name = f"main/binary-{arch}/Packages.xz"
    sums = re.search(rf"^ ([0-9a-f]{{64}}) +\d+ {re.escape(name)}$", release(work), re.MULTILINE)
    if sums is None:
        sys.exit(f"promtool3: {SUITE}'s Release lists no {name}")
    index = lzma.decompress(checked(fetch(f"{MIRROR}/dists/{SUITE}/{name}"), sums.group(1), name)).decode()
    promtool = stanza(index, "promtool")
    if not promtool["Version"].startswith("3."):
        sys.exit(f"promtool3: Debian {SUITE}'s promtool is {promtool['Version']}, not 3.x: change SUITE")
    deb = work / "promtool.deb"
    deb.write_bytes(checked(fetch(f"{MIRROR}/{promtool['Filename']}"), promtool["SHA256"], promtool["Filename"]))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "root/usr/bin/promtool", TARGET)


def main() -> None:
    # Kept between runs in one clone: fetched again only if missing or not a promtool 3.
    if major(TARGET) != 3:
        with tempfile.TemporaryDirectory() as work:
            install(Path(work))
    if major(TARGET) != 3:
        sys.exit(f"promtool3: {TARGET} does not run here")
    print(TARGET.resolve())


if __name__ == "__main__":
    main()
