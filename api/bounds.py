"""Bounds every surface uses: query models that refuse unknown parameters, pages of bounded size,
text parameters of bounded length.

``build_app`` bounds the rest of each request itself: the body (``settings.api.max_body_bytes``,
settable per operation), the query string (``settings.api.max_query_bytes``) and the requests per
principal per minute.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: The largest page any listing serves.
MAX_PAGE = 1000
#: The longest free-text query parameter (a search term, a name) a surface should take.
MAX_TEXT = 200


class Query(BaseModel):
    """Base of every query-string and path model: text parsed to the declared types (lax), unknown
    parameters refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Page(Query):
    limit: int = Field(100, ge=1, le=MAX_PAGE, description=f"items per page, at most {MAX_PAGE}")
    offset: int = Field(0, ge=0, le=1_000_000_000)


class NoQuery(Query):
    """For operations that take no query parameters: any one given is refused by name."""


def text(max_length: int = MAX_TEXT, min_length: int = 0, description: str = "") -> object:
    """A bounded text parameter: ``name: api.bounds.text(64)``."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length, description=description or None)]
