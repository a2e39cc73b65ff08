"""The `where` parameter: property filters for every route that reads events (grammar in events.condition)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.openapi.models import Example

from eventpipe.api.error import ApiError
from eventpipe.events.condition import Condition, ConditionError, parse_condition

MAX_CONDITIONS = 20
MAX_CHARS = 1024
WHERE_HELP = f"""\
A filter `<field><op><value>`; repeat it for several, all of which must hold (at most {MAX_CONDITIONS}).
Field: `event_type`, `user_id`, `topic` or `properties.<path>`, a dotted path into the
properties (names `[A-Za-z_][A-Za-z0-9_-]*`, at most 8 deep). Operators: `=`, `!=`, `>`, `>=`,
`<`, `<=` (the longest one wins: `a>=1` is `>=`). `=` compares numbers as numbers (`100`
matches 100, 100.0 and the string "100"), strings as strings, and `true`, `false`, `null` as
those JSON values (or those strings). A missing property equals nothing and is `!=` anything.
`>`, `>=`, `<`, `<=` need a number and match numeric properties only. `exists:<field>` and
`missing:<field>` test presence: `missing:user_id` keeps the events without a user (a JSON null
property is present). Encode `+` as `%2B`,
`&` as `%26`. A malformed filter gets 422 naming the problem."""
EXAMPLES = {
    "amount": Example(summary="A numeric property", value=["properties.amount>=100"]),
    "two": Example(summary="Two filters, both must hold", value=["properties.amount>=100", "properties.country=FR"]),
    "nested": Example(summary="A nested property, and a missing one", value=["properties.cart.items>2"]),
    "not": Example(summary="Everything but one browser (events without one too)", value=["properties.browser!=safari"]),
    "anonymous": Example(summary="The events without a user", value=["missing:user_id"]),
}

Where = Annotated[list[str] | None, Query(max_length=MAX_CONDITIONS, description=WHERE_HELP, openapi_examples=EXAMPLES)]


def conditions(where: list[str] | None) -> tuple[Condition, ...]:
    """The parsed filters, or a 422 naming the one at fault. An empty `where=` is no filter, as for the others."""
    parsed = []
    for text in where or ():
        if not text:
            continue
        if len(text) > MAX_CHARS:
            raise ApiError(422, "invalid_parameter", f"where: longer than {MAX_CHARS} characters ({text[:60]!r}…)")
        try:
            parsed.append(parse_condition(text))
        except ConditionError as exc:
            raise ApiError(422, "invalid_parameter", f"where: {exc}") from None
    return tuple(parsed)
