"""The Prometheus config `eventpipe up` writes: read back as written, whatever its paths hold."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventpipe.stack.prometheus import render_config


def test_paths_with_yaml_marks_are_read_back_whole() -> None:
    # A data dir is the user's to name; unquoted, " #" began a comment and ": " a mapping.
    rules, ca = Path("/srv/event pipe #2/rules: new"), Path("/srv/event pipe #2/tls/ca.pem")
    config = yaml.safe_load(render_config(9090, 9464, 8000, rules, api_ca=ca))
    assert config["rule_files"] == [f"{rules}/*.yml"]
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "api")
    assert (api["scheme"], api["tls_config"]["ca_file"]) == ("https", str(ca))
