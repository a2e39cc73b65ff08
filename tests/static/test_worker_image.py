"""The worker image names each replica's broker session after its compose container: its resolver, set up
as ingest-worker/Dockerfile sets it, finds the name Docker's DNS gives, where Debian's default would find the
random hostname of /etc/hosts (and the worker would refuse to start). Run in namespaces of this machine
(tests/support/dns.py): no image can be pulled here. The API's image, built on the worker's, puts Debian's
order back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import compose
from tests.support.dockerfile import API_DOCKERFILE, WORKER_DOCKERFILE, image

# Debian's own (the python:*-slim-bookworm base image's) name service switch.
DEBIAN_NSSWITCH = """\
passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
"""
COMPOSE_NAME = "eventpipe-ingest-worker-2.eventpipe_default"


def image_nsswitch(dockerfile: Path) -> str:
    """Debian's nsswitch.conf after an image's own RUN lines that change it, in order."""
    body = "".join(stage.body for stage in image(dockerfile)[1:])
    expressions = re.findall(r"sed -i '([^']+)' /etc/nsswitch\.conf", body)
    assert expressions, f"{dockerfile}: the resolver order is Debian's"
    text = DEBIAN_NSSWITCH
    for expression in expressions:
        text = subprocess.run(["sed", expression], input=text, capture_output=True, text=True, check=True).stdout
    return text


def worker_image_nsswitch() -> str:
    return image_nsswitch(WORKER_DOCKERFILE)


def resolve_in_a_container(nsswitch: str, tmp_path: Path) -> str:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip (iproute2) for its own mount, network and host namespaces")
    config = tmp_path / "nsswitch.conf"
    config.write_text(nsswitch)
    done = subprocess.run(
        ["unshare", "-mnu", sys.executable, "-m", "tests.support.dns", str(config), COMPOSE_NAME],
        cwd=compose.REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_replica_is_named_after_its_compose_container(tmp_path: Path) -> None:
    assert "\nhosts: dns files\n" in worker_image_nsswitch()
    assert resolve_in_a_container(worker_image_nsswitch(), tmp_path) == "name eventpipe-ingest-worker-2"


def test_with_debians_resolver_order_the_worker_would_refuse_to_start(tmp_path: Path) -> None:
    # /etc/hosts answers first with the container's id, which is new at every re-creation.
    assert resolve_in_a_container(DEBIAN_NSSWITCH, tmp_path).startswith("refused ")


def test_the_api_image_built_on_the_worker_image_keeps_debians_resolver_order() -> None:
    # Only the worker names itself from DNS; the API image resolves as an image of its own would.
    hosts = [line.split() for line in image_nsswitch(API_DOCKERFILE).splitlines() if line.startswith("hosts:")]
    assert hosts == [["hosts:", "files", "dns"]]
