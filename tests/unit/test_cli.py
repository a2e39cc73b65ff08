"""How `eventpipe up` reads --mqtt-url: a URL, alone (the broker EVENTPIPE_MQTT_URL names), or absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventpipe import __version__
from eventpipe.cli import restore
from eventpipe.cli.main import build_parser
from eventpipe.errors import BackupError
from eventpipe.stack.lock import stopped
from eventpipe.store.backup import Restored


@pytest.mark.parametrize(
    ("argv", "mqtt_url"),
    [
        (["up", "--mqtt-url", "mqtt://h:1883", "--data-dir", "d"], "mqtt://h:1883"),
        (["up", "--mqtt-url", "--data-dir", "d"], ""),
        (["up", "--data-dir", "d", "--mqtt-url"], ""),
        (["up", "--data-dir", "d"], None),
    ],
)
def test_mqtt_url_is_a_url_alone_or_absent(argv: list[str], mqtt_url: str | None) -> None:
    args = build_parser().parse_args(argv)
    assert (args.mqtt_url, args.data_dir) == (mqtt_url, "d")


def test_mqtt_url_alone_still_excludes_the_port_of_a_broker_up_would_start() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--mqtt-url", "--mqtt-port", "5"])


@pytest.mark.parametrize(
    "argv",
    [
        # An OverflowError traceback after the data dir was made; a broker on a unix socket named 127.0.0.1.
        ["up", "--mqtt-port", "70000"],
        ["up", "--mqtt-port", "0"],
        ["up", "--api-port", "-1"],
        ["up", "--metrics-port", "http"],
        # paho's ValueError traceback at the first send.
        ["publish", "--count", "1", "--topic-prefix", "a/#"],
        ["publish", "--count", "1", "--topic-prefix", "+"],
        ["publish", "--count", "1", "--topic-prefix", "x" * 2000],
        # A traceback, and for --api-seconds an `eventpipe up` left running; -1 printed "nan ms", exit 0.
        ["bench", "--rates", "nan"],
        ["bench", "--rates", "500,inf"],
        ["bench", "--api-seconds", "nan"],
        ["bench", "--latency-seconds", "-1"],
        # A traceback from the sleep between two events; -5 and nan published as fast as they could.
        ["publish", "--count", "1", "--rate", "1e-300"],
        ["publish", "--count", "1", "--rate", "-5"],
        ["publish", "--count", "1", "--rate", "nan"],
    ],
)
def test_a_value_no_broker_socket_or_measurement_takes_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)
    assert refused.value.code == 2
    assert f"argument {argv[-2]}" in capsys.readouterr().err


def test_ports_in_range_are_taken() -> None:
    args = build_parser().parse_args(["up", "--mqtt-port", "65535", "--api-port", "0", "--prometheus-port", "0"])
    assert (args.mqtt_port, args.api_port, args.prometheus_port) == (65535, 0, 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--mqtt-urll=mqtt://u:S3cretPW@127.0.0.1:1883", "--count", "1"],
        ["restore", "--backup", "20260501T030000Z-1a2b3c", "--clickhouse-dns", "http://u:S3cretPW@127.0.0.1:8123/db"],
        # A value cut before it was redacted lost its "@" and showed most of its password.
        ["up", "--mqtt-port", "mqtt://ingest:S3cretPWxyz@127.0.0.1:1883"],
        ["publish", "--count", "1", "--rate", "mqtt://ingest:S3cretPWxyz@127.0.0.1:1883"],
        ["restore", "--backup", "http://default:S3cretPW" + "x" * 60 + "@127.0.0.1:8123"],
    ],
    ids=["misspelt flag with a URL", "misspelt flag with a DSN", "a port", "a rate", "a backup name"],
)
def test_a_usage_error_never_echoes_a_password(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "S3cret" not in err


def test_python_dash_m_eventpipe_is_the_eventpipe_command() -> None:
    """`python -m eventpipe` said "No module named eventpipe.__main__"; only the script worked."""
    done = subprocess.run(
        [sys.executable, "-m", "eventpipe", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"eventpipe {__version__}"), done.stderr


def _interrupt_while(code: str, ignored: bool = False) -> subprocess.CompletedProcess[str]:
    """A Python that runs `code`, which sends itself SIGINT (as Ctrl-C does) where a test wants it."""
    import signal

    disposition = signal.SIG_IGN if ignored else signal.SIG_DFL
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )


SELF_INTERRUPT = "import os, signal; os.kill(os.getpid(), signal.SIGINT); import time; time.sleep(5); print('ran on')"


def test_a_ctrl_c_while_the_command_loads_exits_130_saying_so() -> None:
    # The entry point's imports take about 0.2 s, before main() catches anything: a Ctrl-C there was Python's
    # traceback and death by the signal (-2), or pydantic-core's PanicException, exit 1, inside its import.
    done = _interrupt_while("import eventpipe.cli.startup; " + SELF_INTERRUPT)
    assert (done.returncode, done.stderr, done.stdout) == (130, "eventpipe: interrupted\n", "")


def test_once_loaded_a_ctrl_c_is_pythons_again_and_an_ignored_one_stays_ignored() -> None:
    # From main() on, its own handling says `eventpipe <command>: interrupted` (tests/e2e/test_up.py);
    # a background job's SIGINT, ignored by its shell, is not turned on by the guard.
    loaded = _interrupt_while("import eventpipe.cli.main; " + SELF_INTERRUPT)
    assert loaded.returncode != 130 and "KeyboardInterrupt" in loaded.stderr
    ignored = _interrupt_while("import eventpipe.cli.startup; " + SELF_INTERRUPT, ignored=True)
    assert (ignored.returncode, ignored.stdout) == (0, "ran on\n")


def _restored(erased_since: int | None) -> Restored:
    return Restored("20260101T000000Z-abcdef", 10, 0, None, erased_since=erased_since, erased_since_ms=1_000)


def test_a_restore_without_the_erasure_key_says_how_many_to_erase_again_and_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert restore._finish(_restored(2), "a server") == 0
    said = capsys.readouterr().err
    assert "2 erasure(s) were made since backup 20260101T000000Z-abcdef was taken" in said
    assert "without EVENTPIPE_ERASURE_SECRET (the API's) the restore cannot find them" in said


def test_a_restore_refused_before_it_starts_lets_go_of_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its lock was let go only once the restore had begun: a backup not found (or a store that could not be
    # made private) kept the data dir locked for as long as the process lived.
    monkeypatch.delenv("EVENTPIPE_CLICKHOUSE_DSN", raising=False)
    args = build_parser().parse_args(["restore", "--data-dir", str(tmp_path), "--backup", "20990101T000000Z-abcdef"])
    with pytest.raises(BackupError, match="no backup 20990101T000000Z-abcdef") as refused:
        restore.run_restore(args)
    # While the error is still held (its traceback keeps the command's frame), as by a caller that reports it.
    assert refused.traceback
    stopped(tmp_path, "then restore", "restore").close()  # refused while the lock was held
