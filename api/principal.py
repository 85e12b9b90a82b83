"""Who is asking: the one identity every HTTP surface sees, and how a surface gets it from a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.requests import Request

from api.errors import ApiError


@dataclass(frozen=True)
class Principal:
    subject: str  # the person's account id ("acct_..."); legacy market tokens: "market:<participant>"
    roles: frozenset[str] = frozenset()  # global roles: "operator", "support"
    household: str | None = None  # the household the person belongs to (a person belongs to at most one)
    household_role: Literal["owner", "member"] | None = None
    market_roles: frozenset[str] = frozenset()  # "producer", "consumer": the household's market participation
    via: Literal["session", "bearer"] = "bearer"
    csrf_token: str | None = None  # the session's CSRF token (via == "session")


class Authenticator(Protocol):
    async def authenticate(self, request: Request) -> Principal | None:
        """None: no credential at all (anonymous). A present but invalid, expired or revoked credential
        raises ``api.errors.ApiError(401, "unauthenticated", ...)``."""
        ...


class ChainAuthenticator:
    """Asks each authenticator in turn; the first Principal wins.

    A credential one authenticator refuses (401) may still be another's (a legacy ``qm_`` market
    token is not an accounts token): the refusal is raised only when no later authenticator
    recognises the request either.
    """

    def __init__(self, authenticators: list[Authenticator] | None = None) -> None:
        self.authenticators: list[Authenticator] = list(authenticators or [])

    def add(self, authenticator: Authenticator) -> None:
        self.authenticators.append(authenticator)

    async def authenticate(self, request: Request) -> Principal | None:
        refusal: ApiError | None = None
        for authenticator in self.authenticators:
            try:
                principal = await authenticator.authenticate(request)
            except ApiError as exc:
                if exc.status != 401:
                    raise
                refusal = refusal or exc
                continue
            if principal is not None:
                return principal
        if refusal is not None:
            raise refusal
        return None
