"""`GET /stats/breakdown`: a metric per value of a field, the largest first, over a window that defaults to a day."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from eventpipe.api.auth import Granted, KeyCheck
from eventpipe.api.error import KEYED, ApiError, responses
from eventpipe.api.filter import Where, conditions
from eventpipe.api.model import json_response
from eventpipe.api.param import TIME_HELP, EventType, Whole, instant, only_known, text
from eventpipe.events.condition import ConditionError, parse_field
from eventpipe.events.metric import METRIC_HELP, parse_metric
from eventpipe.store.breakdown import KEY_CHARS
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

Parsed = TypeVar("Parsed")
# A day by default: a breakdown reads every event of its window through
# FINAL, so all time would cost the whole table on every request.
DEFAULT_WINDOW_MS = 86_400_000
SINCE_HELP = f"Window start, inclusive, on the events' own timestamps: {TIME_HELP}. Default: a day before until."
UNTIL_HELP = f"Window end, exclusive, on the events' own timestamps: {TIME_HELP}. Default: now."
BY_HELP = (
    "The field whose values make the items: `event_type`, `user_id`, `topic` or `properties.<path>`. "
    "A key is the value as text (a number in its shortest form, 100.0 as `100`; an object or array as JSON), "
    f"cut to its first {KEY_CHARS} characters "
    "(longer values sharing those are one item); null for a missing property, a JSON null or no user."
)
METRIC_DOC = (
    f"What each item measures: {METRIC_HELP}. `count` counts events, `users` distinct non-null user_ids; "
    "sum, avg, min and max take the property's numeric values only and leave other events out."
)


class BreakdownItem(BaseModel):
    key: str | None = Field(description=f"The field's value as text, at most {KEY_CHARS} characters; null if none.")
    value: int | float = Field(description="The metric over the events whose field has this value.")


class BreakdownAnswer(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "by": "properties.country",
                    "metric": "sum:properties.amount",
                    "items": [{"key": "DE", "value": 1520.5}, {"key": "FR", "value": 830}],
                    "total": 2362.5,
                }
            ]
        }
    }

    by: str
    metric: str
    items: list[BreakdownItem] = Field(description="Largest value first, ties by key; at most `limit`.")
    total: int | float | None = Field(
        description="The metric over every matching event, not only the items shown: 0 for count, users and sum"
        " over none; null for avg, min and max when no matching event has a number."
    )


def router(reader: Reader, keys: KeyCheck, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    api = APIRouter(
        dependencies=[Depends(keys), Depends(only_known)], responses=responses(*KEYED), route_class=route_class
    )

    @api.get(
        "/stats/breakdown",
        tags=["stats"],
        summary="A metric per value of a field, largest first",
        response_model=BreakdownAnswer,
    )
    def breakdown(
        grant: Granted,
        by: Annotated[str, Query(max_length=256, description=BY_HELP, examples=["properties.browser"])],
        metric: Annotated[
            str, Query(max_length=256, description=METRIC_DOC, examples=["count", "users", "sum:properties.amount"])
        ] = "count",
        event_type: EventType = None,
        since: Annotated[str | None, Query(max_length=64, description=SINCE_HELP)] = None,
        until: Annotated[str | None, Query(max_length=64, description=UNTIL_HELP)] = None,
        where: Where = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items at most, 1 to 1000."), Whole] = 100,
    ) -> Response:
        field, measured = _parsed("by", parse_field, by), _parsed("metric", parse_metric, metric)
        until_ms = instant("until", until)
        until_ms = time.time_ns() // 1_000_000 if until_ms is None else until_ms
        since_ms = instant("since", since)
        since_ms = max(0, until_ms - DEFAULT_WINDOW_MS) if since_ms is None else since_ms
        if since_ms >= until_ms:
            raise ApiError(422, "invalid_parameter", "since must be before until")
        # A key limited to some event types breaks down those only (api.grant).
        only = grant.narrow(EventFilter(text(event_type), None, since_ms, until_ms, where=conditions(where)))
        found = reader.breakdown(only, field, measured, limit)
        values = (*(() if found.total is None else (found.total,)), *(value for _, value in found.items))
        if not all(math.isfinite(value) for value in values):
            # JSON has no infinity: say why rather than answer a wrong number.
            raise ApiError(
                422,
                "invalid_parameter",
                f"metric: {metric} overflows a double (beyond 1.8e308) in this window; filter out the huge values",
            )
        return json_response(
            BreakdownAnswer(
                by=by,
                metric=metric,
                items=[BreakdownItem(key=key, value=value) for key, value in found.items],
                total=found.total,
            )
        )

    return api


def _parsed(name: str, parse: Callable[[str], Parsed], value: str) -> Parsed:
    try:
        return parse(value)
    except ConditionError as exc:
        raise ApiError(422, "invalid_parameter", f"{name}: {exc}") from None
