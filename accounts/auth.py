"""Who is asking: ``AccountsAuthenticator`` turns a session cookie or a bearer access token into the
one :class:`api.Principal` every surface sees, and ``SignInThrottle`` bounds password guessing.

The Principal is filled from the accounts' live fold (the service's state, kept current by its
follower): global roles, the household and the person's role in it, the household's market roles.
A credential issued before the account's revocation horizon (``credentials_ms``: password change,
sign out everywhere) is refused even if its row was somehow not revoked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request

from api import ApiError, Principal
from quartier.settings import AccountsSettings

from accounts.sessions import Checked, CredentialStore, Invalid
from accounts.state import AccountsState

SESSION_COOKIE = "quartier_session"


def _refused(reason: str, field: str = "Authorization", location: str = "header") -> ApiError:
    return ApiError(401, "unauthenticated", reason, field, location, headers={"WWW-Authenticate": 'Bearer realm="quartier"'})


class AccountsAuthenticator:
    def __init__(self, state: Callable[[], AccountsState], credentials: CredentialStore) -> None:
        self._state = state
        self.credentials = credentials

    def still_valid(self, checked: Checked) -> bool:
        account = self._state().accounts.get(checked.account)
        return account is not None and checked.issued_ms >= account.credentials_ms

    def principal(self, checked: Checked, via: str, csrf_token: str | None = None) -> Principal:
        state = self._state()
        account = state.accounts[checked.account]
        household = state.households.get(account.household) if account.household else None
        return Principal(
            subject=account.account,
            roles=account.role_set,
            household=account.household,
            household_role=account.household_role,  # type: ignore[arg-type]
            market_roles=household.market_role_set if household is not None else frozenset(),
            via=via,  # type: ignore[arg-type]
            csrf_token=csrf_token,
        )

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or token.count(".") != 2:
                # Not ours (a legacy market token): a later authenticator may know it.
                raise _refused("not an access token")
            try:
                checked = self.credentials.check_access(token.strip())
            except Invalid:
                raise _refused("this access token is invalid, expired or revoked: refresh it or sign in") from None
            if not self.still_valid(checked):
                raise _refused("this access token was revoked: sign in again")
            request.state.credential = ("bearer", checked.family)
            return self.principal(checked, "bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None:
            try:
                checked = self.credentials.check_session(cookie)
            except Invalid:
                raise _refused("this session has ended: sign in again", SESSION_COOKIE, "cookie") from None
            if not self.still_valid(checked):
                raise _refused("this session was revoked: sign in again", SESSION_COOKIE, "cookie")
            request.state.credential = ("session", checked.family)
            return self.principal(checked, "session", self.credentials.csrf_token(checked.family))
        return None


class SignInThrottle:
    """At most ``sign_in_per_account`` attempts per email and ``sign_in_per_address`` per client
    address in any moving window of ``sign_in_window_s`` (the ``limits`` package, in memory: one
    process serves every surface). Unknown emails count like known ones, so the limit says nothing."""

    def __init__(self, options: AccountsSettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_account = RateLimitItemPerSecond(options.sign_in_per_account, options.sign_in_window_s)
        self._per_address = RateLimitItemPerSecond(options.sign_in_per_address, options.sign_in_window_s)

    def attempt(self, email: str | None, address: str) -> None:
        """Counts one attempt; a 429 with Retry-After when either limit is spent (``email`` None:
        the client address only, as for sign-ups, which must not lock an account's owner out)."""
        keys = [(self._per_address, f"address:{address}")]
        if email is not None:
            keys.insert(0, (self._per_account, f"email:{email.strip().lower()}"))
        for item, key in keys:
            if not self._limiter.hit(item, "sign-in", key):
                reset, _ = self._limiter.get_window_stats(item, "sign-in", key)
                retry = max(1, int(reset - time.time() + 0.999))
                raise ApiError(429, "rate_limited", f"too many sign-in attempts: try again in {retry} s",
                               "email" if key.startswith("email:") else None, "body", headers={"Retry-After": str(retry)})
