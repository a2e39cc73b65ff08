"""The environment and settings of every process the bench starts, and of the bench itself."""

from __future__ import annotations

import os
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from eventpipe.config import Settings

# The one user setting the children keep: where the broker program is installed, which the bench's own
# broker uses too. Every other EVENTPIPE_ variable is left out: the user's DSNs sent the demo events into
# their real store, a retention or a session secret changed what was measured (the drain waited 600 s
# for a session its worker never joined), and the bench sets what its children need itself.
KEPT = frozenset({"EVENTPIPE_MOSQUITTO_BINARY"})


def environment(settings: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the user's EVENTPIPE_ settings (but KEPT), plus `settings`."""
    own = {name: value for name, value in os.environ.items() if not name.startswith("EVENTPIPE_") or name in KEPT}
    return own | (settings or {})


class _Defaults(Settings):
    """Settings from what is passed alone: no variable of the environment is read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings() -> Settings:
    """What the bench sizes its broker and windows by: the settings its children run with (`environment`),
    eventpipe's defaults but KEPT. It read the user's own: with EVENTPIPE_MQTT_RECEIVE_MAXIMUM 10000 and
    EVENTPIPE_BATCH_MAX_ROWS 5000 exported, its drain's worker, on the defaults but the window it was
    given, refused to start, naming EVENTPIPE_BATCH_MAX_ROWS at 20000."""
    kept: dict[str, Any] = {
        name.removeprefix("EVENTPIPE_").lower(): os.environ[name] for name in KEPT & os.environ.keys()
    }
    return _Defaults(**kept)
