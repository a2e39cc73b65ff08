"""The Prometheus config `eventpipe up` writes: read back as written, whatever its paths hold."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eventpipe.host import address
from eventpipe.stack.prometheus import render_config


def test_paths_with_yaml_marks_are_read_back_whole() -> None:
    # A data dir is the user's to name; unquoted, " #" began a comment and ": " a mapping.
    rules, ca = Path("/srv/event pipe #2/rules: new"), Path("/srv/event pipe #2/tls/ca.pem")
    config = yaml.safe_load(render_config(9090, "127.0.0.1:9464", "127.0.0.1:8000", rules, api_ca=ca))
    assert config["rule_files"] == [f"{rules}/*.yml"]
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "api")
    assert (api["scheme"], api["tls_config"]["ca_file"]) == ("https", str(ca))
    # The certificate `eventpipe up --tls` makes names localhost, whatever address the API listens on.
    assert api["tls_config"]["server_name"] == "localhost"


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("", "127.0.0.1:8000"),
        ("0.0.0.0", "127.0.0.1:8000"),
        ("::", "[::1]:8000"),
        ("192.0.2.2", "192.0.2.2:8000"),
        ("::1", "[::1]:8000"),
        ("localhost", "localhost:8000"),
    ],
)
def test_prometheus_scrapes_the_api_and_the_worker_where_their_host_settings_make_them_listen(
    host: str, target: str
) -> None:
    # Targets were 127.0.0.1 whatever EVENTPIPE_API_HOST and EVENTPIPE_METRICS_HOST said: with a specific
    # address, nothing was scraped, EventpipeWorkerDown and EventpipeAPIDown paged for a working stack,
    # and no other alert could fire (found by a cross-check of the config as code).
    config = yaml.safe_load(render_config(9090, address(host, 9464), address(host, 8000), Path("/rules")))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["api"] == [target]
    assert targets["ingest-worker"] == [target.replace("8000", "9464")]


def test_an_api_on_the_operators_own_certificate_is_scraped_over_https() -> None:
    # Scraped over plain HTTP, it looked down and EventpipeAPIDown paged (found by an attack).
    config = yaml.safe_load(render_config(9090, "127.0.0.1:9464", "127.0.0.1:8000", Path("/rules"), api_https=True))
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "api")
    assert (api["scheme"], api["tls_config"]) == ("https", {"insecure_skip_verify": True})
