"""The event contract: one MQTT message in, one event row or one dead letter out."""

from eventpipe.events.contract import Event, Limits, Reason, Rejection, parse

__all__ = ["Event", "Limits", "Reason", "Rejection", "parse"]
