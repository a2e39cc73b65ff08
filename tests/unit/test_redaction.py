"""Redaction: the password of every URL or DSN in a text is masked, and nothing else changes."""

from __future__ import annotations

import logging

import pytest

from eventpipe.redaction import RedactingFormatter, misread_password, redact, url_problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt://ingest:s3cret@broker:1883", "mqtt://ingest:***@broker:1883"),
        ("http://api:s3cret@clickhouse:8123/eventpipe", "http://api:***@clickhouse:8123/eventpipe"),
        ("mqtts://:s3cret@broker", "mqtts://:***@broker"),
        # Unescaped "@" in a password: urlsplit reads to the last one, and so does redaction.
        ("mqtt://ingest:p@ss@broker:1883", "mqtt://ingest:***@broker:1883"),
        (
            "http://clickhouse:8123/eventpipe?user=api&password=s3cret",
            "http://clickhouse:8123/eventpipe?user=api&password=***",
        ),
        # Unescaped "/", "?" or "#": the settings refuse such a URL, and any text quoting one is masked whole.
        ("mqtt://ingest:Sup3r/Secret99@127.0.0.1:1883", "mqtt://ingest:***@127.0.0.1:1883"),
        ("'http://default:Sup3r?Secret99@h:8123/default'", "'http://default:***@h:8123/default'"),
        ("mqtt://ingest:Sup3r#Secret99@h", "mqtt://ingest:***@h"),
        # Quotes in a password: masked whole, also inside the quotes of an error's repr.
        ("mqtt://ingest:ab'cd@h:1883", "mqtt://ingest:***@h:1883"),
        ("""URL 'mqtt://ingest:ab"cd@h:1883' refused""", """URL 'mqtt://ingest:***@h:1883' refused"""),
        (
            "could not reach 'mqtt://a:one@h:1' nor http://b:two@h:2/db, giving up",
            "could not reach 'mqtt://a:***@h:1' nor http://b:***@h:2/db, giving up",
        ),
    ],
)
def test_passwords_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "mqtt://ingest@broker:1883",
        "http://127.0.0.1:8123/eventpipe",
        "chdb:///var/lib/eventpipe/clickhouse?database=eventpipe",
        "user@example.com at 12:30",
    ],
)
def test_text_without_passwords_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_log_records_are_redacted_with_their_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError("cannot open http://migrate:s3cret@clickhouse:8123")
    except ValueError as exc:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "from %s", ("mqtt://w:s3cret@b",), (type(exc), exc, exc.__traceback__)
        )
    text = formatter.format(record)
    assert "s3cret" not in text
    assert "from mqtt://w:***@b" in text and "http://migrate:***@clickhouse:8123" in text


@pytest.mark.parametrize(
    ("url", "misread"),
    [
        ("mqtt://ingest:Sup3r/Secret99@127.0.0.1:1883", True),
        ("http://default:Sup3r?Secret99@h:8123/default", True),
        ("mqtts://ingest:Sup3r#Secret99@h", True),
        ("mqtt://ingest:Sup3r%2FSecret99@h", False),  # percent-encoded: read whole
        ("mqtt://ingest:p@ss@broker:1883", False),  # an "@" is read whole: the parser takes the last
        # An "@" after the host is the rest of a password holding "/", "?" or "#" as often as it is an "@" of
        # the path or query: refused, to be percent-encoded either way (`u:Zq9@/Secret@host` was read as
        # user u at no host, and the error quoted "Secret@host" as the database's name).
        ("http://default:s3cret@clickhouse:8123/db?client_name=ops@example", True),
        ("mqtt://ingest@broker:1883/x@y", True),
        ("http://u:Zq9@/Secret@127.0.0.1:8123/db", True),
        ("http://u:Zq9@?Secret@127.0.0.1:8123/db", True),
        ("http://u:Zq9@x#Secret@127.0.0.1:8123/db", True),
        ("http://u:Zq9%40%2FSecret@127.0.0.1:8123/db", False),
        ("chdb:///var/lib/eventpipe/clickhouse", False),
        # A password of digits and "/" reads as a port: refused, as is an "@" in a query without userinfo,
        # which percent-encoding ("%40") makes plain.
        ("http://default:8123/x@clickhouse:8123/db", True),
        ("http://clickhouse:8123/db?user=a@b", True),
    ],
)
def test_a_password_a_parser_would_split_is_told_apart(url: str, misread: bool) -> None:
    assert misread_password(url) is misread


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("chdb:///tmp/a data dir/clickhouse", None),  # a blank in a path is no password's: read as is
        ("chdb://:memory:", None),  # a location, not a host and port
        ("http://default:s3cr3t@clickhouse:8123/db\n", None),  # a secret file's newline: stripped by the callers
        (" http://clickhouse:8123", None),
        ("http://default:s3cr%203t@clickhouse:8123/db", None),
        ("HTTP://clickhouse:8123", None),
        ("http://default:s3cr 3t@clickhouse:8123/db", "blank"),
        ("http://default:s3cr\t3t@clickhouse:8123/db", "blank"),
        ("http://default:s3cr\uff0f3t@clickhouse:8123/db", "cannot be read"),
        ("http://clickhouse:eighty/db", "cannot be read"),
        ("default:s3cr3t@clickhouse:8123/db", "must start with http://, chdb://"),
        ("clickhouse://default:s3cr3t@clickhouse:9000/db", "must start with http://, chdb://"),
        ("http://default:s3cr/3t@clickhouse:8123/db", "percent-encode"),
    ],
)
def test_a_url_is_read_only_as_typed_and_said_wrong_without_quoting_it(url: str, problem: str | None) -> None:
    found = url_problem(url, ("http", "chdb"))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert "s3cr" not in found and "3t" not in found
