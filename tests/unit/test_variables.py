"""EVENTPIPE_ variables no setting reads: named at start, with the setting most likely meant, never their values."""

from __future__ import annotations

import os

import pytest

from eventpipe.cli import variables
from eventpipe.cli.main import main
from eventpipe.port import free_port


def test_a_misspelt_setting_is_named_with_the_one_it_likely_meant() -> None:
    environ = {
        "EVENTPIPE_RETENTION_DAY": "30",  # ran with no retention at all, silently
        "EVENTPIPE_SOMETHING_ELSE": "1",
        "eventpipe_retention_days": "30",  # read: settings are read in any case
        "EVENTPIPE_TEST_DOCKER": "never",  # the test suite's own
        "PATH": "/bin",
    }
    assert variables.unknown(environ) == [
        "EVENTPIPE_RETENTION_DAY (did you mean EVENTPIPE_RETENTION_DAYS?)",
        "EVENTPIPE_SOMETHING_ELSE",
    ]


def test_every_command_warns_about_them_without_their_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTPIPE_RETENTION_DAY", "s3cret-looking-value")
    monkeypatch.setenv("EVENTPIPE_API_PORT", str(free_port()))  # nothing listens: unhealthy, at once
    assert main(["healthcheck", "api"]) == 1
    err = capsys.readouterr().err
    assert (
        "eventpipe: warning: no setting reads EVENTPIPE_RETENTION_DAY (did you mean EVENTPIPE_RETENTION_DAYS?): ignored"
        in err
    )
    assert "s3cret" not in err


def test_a_clean_environment_gets_no_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.upper().startswith("EVENTPIPE_")]:
        monkeypatch.delenv(name)  # whatever the runner's shell sets
    monkeypatch.setenv("EVENTPIPE_API_PORT", str(free_port()))
    assert main(["healthcheck", "api"]) == 1
    assert "warning" not in capsys.readouterr().err


def test_a_problem_between_two_flags_names_the_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]
) -> None:
    # Found walking the docs: `publish --mqtt-url mqtt://... --ca-file CA` was told to fix EVENTPIPE_MQTT_CA_FILE
    # and EVENTPIPE_MQTT_URL, which were not set: the flags it was given were the ones to change.
    for name in ("EVENTPIPE_MQTT_URL", "EVENTPIPE_MQTT_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    ca = os.path.join(tmp_path, "ca.pem")
    with open(ca, "w") as file:
        file.write("not read: the settings are refused first\n")
    argv = ["publish", "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}", "--ca-file", ca, "--count", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--ca-file is set, so --mqtt-url must be mqtts://" in err, err
    assert "EVENTPIPE_" not in err, err
