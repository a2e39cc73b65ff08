"""A path parameter that takes any text, line breaks included: event ids are any string."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class AnyText(Convertor[str]):
    """Like Starlette's `path`, whose `.*` takes no line break: `/events/{id:path}` compiles to
    `^/events/(?P<id>.*)$`, where `$` also matches before a final line break. So `/events/nl%0A`
    answered the event `nl`, and `/events/a%0Ab` (an id with a line break inside) was 404. With `.`
    matching line breaks the greedy match takes the whole rest of the path."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# The name routes use ("/events/{event_id:text}"). Registered on import, before any route is
# compiled: Starlette keeps convertors in one table for the process, and registering is idempotent.
TEXT = "text"
register_url_convertor(TEXT, AnyText())
