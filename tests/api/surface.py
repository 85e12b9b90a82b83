"""A small surface and authenticator for the API layer's own tests: households' notes.

Bearer tokens and session cookies (``sid``) map to fixed principals, one of each kind the
authorization matrix knows. The notes live in a dict: the surface is about the layer, not storage.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api import ApiError, Call, Principal, Surface, SurfaceContext, allow, operation
from api.access import own_household
from api.bounds import Page, Query, text
from api.csrf import check_form

PRINCIPALS: dict[str, Principal] = {
    "member_of_other": Principal("acct_other", household="hh_other", household_role="member"),
    "member": Principal("acct_member", household="hh_1", household_role="member"),
    "owner": Principal("acct_owner", household="hh_1", household_role="owner"),
    "market_participant": Principal("market:hh_2", household="hh_2", market_roles=frozenset({"producer"})),
    "support": Principal("acct_support", roles=frozenset({"support"})),
    "operator": Principal("acct_operator", roles=frozenset({"operator"})),
}
TOKENS = {f"tok_{name}": principal for name, principal in PRINCIPALS.items()}
SESSION_CSRF = "csrf-of-session-1"
SESSIONS = {"session-1": Principal("acct_owner", household="hh_1", household_role="owner", via="session",
                                   csrf_token=SESSION_CSRF)}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok_{name}"}


class TestAuthenticator:
    """Bearer ``tok_<kind>`` tokens and ``sid`` session cookies; anything else present is a 401."""

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            principal = TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None
            if principal is None:
                raise ApiError(401, "unauthenticated", "unknown token", "Authorization", "header")
            return principal
        sid = request.cookies.get("sid")
        if sid is not None:
            if sid not in SESSIONS:
                raise ApiError(401, "unauthenticated", "unknown session", "sid", "cookie")
            return SESSIONS[sid]
        return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoteCreate(Strict):
    text: Annotated[str, Field(min_length=1, max_length=200)]
    priority: int = Field(0, ge=0, le=5)


class NoteView(BaseModel):
    note_id: str
    household: str
    text: str
    priority: int


class NoteList(BaseModel):
    items: list[NoteView]


class NoteQuery(Page):
    search: text(32) = ""  # type: ignore[valid-type]


class NotePath(Query):
    note_id: Annotated[str, Field(pattern=r"^n[0-9]{1,9}$")]


class HealthView(BaseModel):
    status: str


class Upload(Strict):
    data: str


class UploadView(BaseModel):
    size: int


@dataclass
class Notes:
    items: dict[str, NoteView] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))


@operation("GET", "/v1/health", allow=allow("anonymous"), response=HealthView, summary="Is it up")
async def health(call: Call) -> HealthView:
    return HealthView(status="ok")


@operation("POST", "/v1/notes", allow=allow("owner", "member"), body=NoteCreate, response=NoteView, status=201,
           summary="Write a note for one's household")
async def create_note(call: Call) -> NoteView:
    notes: Notes = call.state
    note_id = f"n{next(notes.ids)}"
    assert call.me.household is not None
    note = NoteView(note_id=note_id, household=call.me.household, text=call.body.text, priority=call.body.priority)
    notes.items[note_id] = note
    return note


@operation("GET", "/v1/notes", allow=allow("owner", "member"), query=NoteQuery, response=NoteList,
           summary="One's household's notes")
async def list_notes(call: Call) -> NoteList:
    notes: Notes = call.state
    mine = [n for n in notes.items.values() if n.household == call.me.household and call.query.search in n.text]
    return NoteList(items=mine[call.query.offset:call.query.offset + call.query.limit])


@operation("GET", "/v1/notes/{note_id}", allow=allow("owner", "member", "support", "operator"),
           path_params=NotePath, response=NoteView, errors=(404,), summary="One note")
async def get_note(call: Call) -> NoteView:
    notes: Notes = call.state
    note = notes.items.get(call.path.note_id)
    if note is None:
        raise ApiError(404, "not_found", f"no note {call.path.note_id!r}", "note_id", "path")
    own_household(call.me, note.household, "note_id", "note")
    return note


@operation("DELETE", "/v1/notes/{note_id}", allow=allow("owner"), path_params=NotePath, response=NoteView,
           errors=(404,), summary="Delete a note (owner)")
async def delete_note(call: Call) -> NoteView:
    notes: Notes = call.state
    note = notes.items.get(call.path.note_id)
    if note is None or note.household != call.me.household:
        raise ApiError(404, "not_found", f"no note {call.path.note_id!r} you may see", "note_id", "path")
    return notes.items.pop(call.path.note_id)


@operation("POST", "/v1/uploads", allow=allow("authenticated"), body=Upload, response=UploadView, status=201,
           max_body_bytes=64, summary="A tiny upload (64 bytes at most)")
async def upload(call: Call) -> UploadView:
    return UploadView(size=len(call.body.data))


@operation("GET", "/v1/fleet", allow=allow("operator", "support"), response=NoteList, summary="Every note")
async def fleet(call: Call) -> NoteList:
    notes: Notes = call.state
    return NoteList(items=list(notes.items.values()))


async def note_form(request: Request) -> Response:
    """An HTML form post: CSRF from the hidden field."""
    form = await request.form()
    check_form(request, form)
    return HTMLResponse("<p>saved</p>", status_code=201)


def surface(context: SurfaceContext) -> Surface:
    return Surface(name="notes", routes=[health, create_note, list_notes, get_note, delete_note, upload, fleet,
                                         Route("/notes/form", note_form, methods=["POST"])],
                   state=Notes(), authenticators=[TestAuthenticator()])
