"""What each flag of the eventpipe command takes: argparse types that refuse a bad value with a usage
error naming it (redacted), before anything starts, rather than a traceback later."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from eventpipe.bench import SCENARIOS
from eventpipe.redaction import redact

# A topic prefix's length: an MQTT topic is 65,535 bytes at most, and a prefix is no place for a long one.
MAX_PREFIX_CHARS = 1024


def port(lowest: int) -> Callable[[str], int]:
    """A port from `lowest` to 65535, or argparse's usage error: 70000 was an OverflowError traceback
    after the data dir was made, and a broker on port 0 opened a unix socket named 127.0.0.1."""

    def port(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)!r} is no port number") from None
        if not lowest <= number <= 65_535:
            raise argparse.ArgumentTypeError(f"{number} is no port: {lowest} to 65535")
        return number

    return port


def topic(text: str) -> str:
    """A topic prefix to publish under: `a/#` or `+` was a ValueError traceback from paho at the first send."""
    if not 0 < len(text) <= MAX_PREFIX_CHARS or any(char in text for char in "+#\0"):
        raise argparse.ArgumentTypeError(f"1 to {MAX_PREFIX_CHARS} characters, without '+', '#' or NUL")
    return text


def shown(text: str, most: int = 20) -> str:
    """A value echoed in a usage error: redacted, then cut (cut first, a password lost its "@" and showed)."""
    return redact(text)[:most]


class Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors redacted: a misspelt flag echoed its value, the password of
    `--mqtt-urll=mqtt://u:secret@host` included. Subcommands' parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message))


def seconds(text: str) -> float:
    """A positive, finite time: nan was a traceback, and -1 printed "nan ms" with exit 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)!r} is no number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{shown(text)!r}: give a positive number of seconds")
    return seconds


def rate(text: str) -> float:
    """0, or a finite rate of at least one event in 1,000 s: -5 and nan published as fast as they could, and
    1e-300 was a traceback from the sleep between two events."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)!r} is no number of events per second") from None
    if not (rate == 0 or (math.isfinite(rate) and rate >= MIN_RATE)):
        raise argparse.ArgumentTypeError(f"{shown(text)!r}: give 0 (as fast as possible) or at least {MIN_RATE}")
    return rate


MIN_RATE = 0.001


def rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers separated by commas, e.g. 500,2000") from None
    if not rates or not all(math.isfinite(rate) and rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError("expected positive rates separated by commas, e.g. 500,2000")
    return rates


def counts(text: str) -> tuple[int, ...]:
    counts = tuple(positive_int(part) for part in text.split(",") if part.strip())
    if not counts:
        raise argparse.ArgumentTypeError("expected process counts separated by commas, e.g. 1,2")
    return counts


def scenarios(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return chosen


def backup_name(text: str) -> str:
    from eventpipe.store.naming import EXAMPLE_NAME, NAME

    # Checked before anything opens: a name never reaches a path or a statement unless it is one.
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a backup name: {shown(text, 80)!r} (they look like {EXAMPLE_NAME})")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
