"""MQTT URLs: mqtt://user:password@host:port (mqtts:// for TLS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from eventpipe.errors import ConfigError
from eventpipe.redaction import url_problem

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


def problem(url: str) -> str | None:
    """Why `url` is no MQTT URL, without quoting it; None when it is one."""
    found = url_problem(url, tuple(DEFAULT_PORTS))
    if found is None and not urlsplit(url.strip()).hostname:
        return "it has no host"
    return found


@dataclass(frozen=True, slots=True)
class MqttAddress:
    host: str
    port: int
    username: str | None = None
    # Out of the repr: a traceback, an assertion or a %r would show it, and redaction knows URLs, not reprs.
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> MqttAddress:
        found = problem(url)
        if found is not None:
            raise ConfigError(f"MQTT URL: {found}")
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        return cls(
            host=str(parts.hostname),
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme in ("mqtts", "ssl"),
        )

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"
