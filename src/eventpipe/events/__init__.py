"""The event contract: one MQTT message in, one event row or one dead letter out."""

from eventpipe.events.contract import PROBE_EVENT_TYPE, Event, Limits, Reason, Rejection, parse

__all__ = ["PROBE_EVENT_TYPE", "Event", "Limits", "Reason", "Rejection", "parse"]
