"""Runbook links that open: the rules Prometheus loads get an absolute URL for each alert's runbook.

The rules in prometheus/rules/ name a runbook as `docs/runbooks.md#<alert>`,
a path inside the repository, which their promtool tests expect and which is a
dead link in Alertmanager, Grafana or a pager. What Prometheus loads is a copy
with that path replaced by one URL (EVENTPIPE_RUNBOOK_URL), as kubernetes-mixin
builds its links from one runbookURLPattern. `eventpipe up` writes the copy
here; compose's Prometheus writes it in prometheus/entrypoint.sh, the same way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import eventpipe
from eventpipe.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = "docs/runbooks.md"
LINK = re.compile(r"(?m)^([ \t]*runbook_url:[ \t]*)docs/runbooks\.md#")


def checkout_runbooks() -> str:
    """docs/runbooks.md of the checkout eventpipe runs from (an editable install), as a file:// URL."""
    path = Path(eventpipe.__file__).resolve().parents[2] / SOURCE
    if not path.is_file():
        raise ConfigError(
            f"no {SOURCE} at {path} to link the alerts to: set EVENTPIPE_RUNBOOK_URL to where it opens "
            "in a browser (https://.../docs/runbooks.md)"
        )
    return path.as_uri()


def fill(rules: str, url: str) -> str:
    """`rules` (YAML text) with every runbook_url `docs/runbooks.md#<anchor>` made `<url>#<anchor>`."""
    return LINK.sub(lambda match: f"{match.group(1)}{url}#", rules)


def filled_rules(source: Path, target: Path, url: str) -> Path:
    """The rule files of `source` written to `target` with absolute runbook links, and `target`; `url` empty
    means this checkout's docs/runbooks.md. Without a `source` directory, `source` itself: Prometheus then
    runs without rules, and says so. OSError or UnicodeError when a file cannot be read or written."""
    if not source.is_dir():
        return source
    if overlap(source, target):
        # The copy replaces the target's rule files: they would be the source's, deleted before being read.
        raise ConfigError(
            f"EVENTPIPE_PROMETHEUS_RULES_DIR {source} is, holds or is inside {target}, where `eventpipe up` "
            "writes the copy of the rules Prometheus loads: name the folder you keep the rules in"
        )
    rules = sorted(source.glob("*.yml"))
    if not rules:
        log.warning(
            "no rule file (*.yml) in %s (EVENTPIPE_PROMETHEUS_RULES_DIR): Prometheus runs without rules", source
        )
    url = url or checkout_runbooks()
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*.yml"):
        stale.unlink()  # a rule file since removed from the source must not stay loaded
    for path in rules:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise UnicodeError(f"{path} is not UTF-8 text") from None  # the codec's own message names no file
        (target / path.name).write_text(fill(text, url))
    return target


def overlap(one: Path, other: Path) -> bool:
    """Whether the two folders are one, or one holds the other, links followed."""
    one, other = one.resolve(), other.resolve()
    return one == other or one in other.parents or other in one.parents
