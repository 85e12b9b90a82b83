"""Bearer tokens: issued once, stored only as a hash, scoped to one participant and one role.

A token is 32 random bytes (256 bits), so a plain SHA-256 of it is enough at rest: password hashes
(argon2, bcrypt) are slow on purpose to protect guessable secrets, which these are not, and a slow
hash on every request would cap the API's throughput. Lookups compare hashes through the database's
index, never the token itself.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Engine, insert, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.access import CHALLENGE
from api.errors import ApiError
from api.principal import Principal as ApiPrincipal

from marketplace.commands import Principal, Role
from marketplace.readmodel import ApiTokenRow

TOKEN_PREFIX = "qm_"
ROLES: tuple[Role, ...] = ("producer", "consumer", "operator")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Resolved tokens kept in memory (a token's participant and role never change, and it is never
#: revoked): most requests then cost no database read. Emptied when full.
RESOLVED_CACHE_SIZE = 100_000


class TokenStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._resolved: dict[str, Principal] = {}

    def issue(self, participant: str, role: Role, now_ms: int) -> str:
        """A new token for ``participant`` acting as ``role``; only its hash is kept."""
        return self.issue_many([(participant, role)], now_ms)[0]

    def issue_many(self, grants: list[tuple[str, Role]], now_ms: int) -> list[str]:
        """New tokens for (participant, role) pairs, in one transaction, in the same order."""
        for _, role in grants:
            if role not in ROLES:
                raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        tokens = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in grants]
        rows = [
            {"token_hash": hash_token(token), "participant": participant, "role": role, "created_ms": now_ms}
            for token, (participant, role) in zip(tokens, grants)
        ]
        with self.engine.begin() as connection:
            connection.execute(insert(ApiTokenRow), rows)
        return tokens

    def resolve_cached(self, token: str) -> Principal | None:
        """The principal of a token this store resolved before, without reading the database."""
        return self._resolved.get(hash_token(token))

    def resolve(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        if (cached := self._resolved.get(digest)) is not None:
            return cached
        with self.engine.connect() as connection:
            found = connection.execute(
                select(ApiTokenRow.participant, ApiTokenRow.role).where(ApiTokenRow.token_hash == digest)  # type: ignore[arg-type]
            ).first()
        if found is None:
            return None
        if len(self._resolved) >= RESOLVED_CACHE_SIZE:
            self._resolved.clear()
        self._resolved[digest] = principal = Principal(found.participant, found.role)
        return principal


class MarketTokenAuthenticator:
    """Today's ``qm_`` market tokens as API principals (docs/marketplace.md: they keep working after
    accounts lands, chained after its authenticator).

    A participant's token is the household it trades for (participant id = household id) in one
    market role: ``subject="market:<participant>"``, ``household=<participant>``,
    ``market_roles={role}``; an operator's has ``roles={"operator"}``. Any other bearer credential is
    a 401 (which a chain raises only if no other authenticator knows it).
    """

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens

    async def authenticate(self, request: Request) -> ApiPrincipal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>", "Authorization", "header",
                           headers=CHALLENGE)
        token = token.strip()
        found = self.tokens.resolve_cached(token) or await run_in_threadpool(self.tokens.resolve, token)
        if found is None:
            raise ApiError(401, "unauthenticated", "unknown token", "Authorization", "header", headers=CHALLENGE)
        if found.role == "operator":
            return ApiPrincipal(f"market:{found.participant}", roles=frozenset({"operator"}))
        return ApiPrincipal(f"market:{found.participant}", household=found.participant,
                            market_roles=frozenset({found.role}))
