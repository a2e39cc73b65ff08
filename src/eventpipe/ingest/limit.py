"""The parser's limits as the settings give them, for the worker and for a dead-letter replay alike."""

from __future__ import annotations

from eventpipe.config import Settings
from eventpipe.events import Limits


def limits_from(settings: Settings) -> Limits:
    past_days, past_setting = settings.max_past_days, "EVENTPIPE_MAX_PAST_DAYS"
    if settings.retention_days and (not past_days or settings.retention_days < past_days):
        # The TTL drops an event older than the retention as it is inserted: stored, counted and
        # acknowledged, then in no read and no dead letter. A dead letter says so.
        past_days, past_setting = settings.retention_days, "EVENTPIPE_RETENTION_DAYS"
    return Limits(
        max_payload_bytes=settings.max_payload_bytes,
        max_depth=settings.max_depth,
        max_future_skew_ms=settings.max_future_skew_s * 1000,
        max_past_ms=past_days * 86_400_000,
        max_past_setting=past_setting,
        retention_ms=settings.retention_days * 86_400_000,
        envelope_keys=tuple(settings.envelope_keys),
        probe_topic=settings.probe_topic,
        topic_filter=settings.mqtt_topic,
    )
