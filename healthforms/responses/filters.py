"""The responses list's filters as a request gives them (`status`, `from`, `to`, `name`,
`birthDate`), parsed
once for every view of a form's responses: the list (responses/routes.py) and the
exports (exports/routes.py) take the same dependency, so they answer a bad value with
the same 422 and hold the same responses for the same query string."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from healthforms.clock import parse_rfc3339
from healthforms.errors import ValidationFailed
from healthforms.responses.patients import matching_ids, parse_search
from healthforms.responses.review import STATUSES
from healthforms.responses.service import ResponseFilter
from healthforms.security.context import CurrentPrincipal
from healthforms.state import StateDep


async def response_filter(
    state: StateDep,
    principal: CurrentPrincipal,
    status: str | None = Query(default=None, max_length=16),
    since: str | None = Query(default=None, alias="from", max_length=40),
    until: str | None = Query(default=None, alias="to", max_length=40),
    name: str | None = Query(default=None, max_length=400),
    birth_date: str | None = Query(default=None, alias="birthDate", max_length=40),
) -> ResponseFilter:
    """The filter of this request's query string; 422 naming the parameter when one is
    not valid (docs/responses.md). A name or date of birth is matched through the
    caller's organisation's blind indexes."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed({"status": f"status must be one of {', '.join(STATUSES)}"})
    search = parse_search(name, birth_date)
    return ResponseFilter(
        status=status,
        since=parse_rfc3339(since, "from") if since else None,
        until=parse_rfc3339(until, "to") if until else None,
        search=search,
        patients=(
            None
            if search.is_empty()
            else matching_ids(state.keys, principal.organization_id, search)
        ),
    )


ResponseFilterDep = Annotated[ResponseFilter, Depends(response_filter)]
