"""Sign-in credentials: web sessions, access tokens and rotating refresh tokens, all revocable.

- A **session** (the ``quartier_session`` cookie) is an opaque 256-bit secret; only its SHA-256 is
  stored. Its CSRF token is derived (HMAC of the session's id under the token secret), never stored.
- An **access token** is a short-lived JWT (HS256, joserfc): ``sub`` the account, ``sid`` the token
  family, ``iat``/``exp``, ``jti``. Checked on every request against revocation: its family must not
  be revoked, and it must be issued after the account's revocation horizon (``credentials_ms``,
  moved by a password change or "sign out everywhere", from the accounts log).
- A **refresh token** is opaque (``rt_`` + 256 bits, SHA-256 at rest) and single-use: a refresh
  returns a new pair in the same family and spends the old one; a spent one presented again
  revokes its whole family (someone copied it).

A token family's row is read at most once a second per family (``FAMILY_RECHECK_S``): this
process's own revocations (sign-out, a replayed refresh token, password change) take effect at once;
one made by another process serving the same database within a second. Without that cache the
lookup cost about 0.7 ms a request here, ten times the JWT check.

Rows live in the accounts database but are not a projection of the log (they never go on it):
``rebuild`` leaves them alone. Revocation is also kept on the log through ``credentials_ms``, so a
rebuilt read model still refuses every credential issued before a password change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import Engine, select, update
from sqlmodel import Field, SQLModel

from quartier.settings import Settings
from quartier.sql import BigInt


class Credential(SQLModel, table=True):
    __tablename__ = "accounts_credential"
    secret_sha256: str = Field(primary_key=True)
    kind: str  # session, refresh
    account: str = Field(index=True)
    family: str = Field(index=True)  # the session, or the token family access tokens name as `sid`
    created_ms: int = Field(sa_type=BigInt)
    expires_ms: int = Field(sa_type=BigInt)
    spent_ms: int | None = Field(default=None, sa_type=BigInt)  # a refresh token used once
    revoked_ms: int | None = Field(default=None, sa_type=BigInt)


TABLES = [Credential.__table__]  # type: ignore[attr-defined]


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Checked:
    account: str
    family: str
    issued_ms: int


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class Invalid(Exception):
    """A credential that is unknown, expired, spent or revoked (the reason is for logs, not clients)."""


#: How long a token family found not revoked is believed so without reading its rows again.
FAMILY_RECHECK_S = 1.0


class CredentialStore:
    def __init__(self, settings: Settings, engine: Engine, secret: bytes) -> None:
        self.options = settings.accounts
        self.engine = engine
        self._secret = secret
        self._key = OctKey.import_key(secret)
        self._revoked: set[str] = set()  # families this process revoked or found revoked
        self._valid_until: dict[str, float] = {}  # family -> monotonic time its row must be read again

    # --- sessions --------------------------------------------------------------------------------

    def csrf_token(self, family: str) -> str:
        return hmac.new(self._secret, f"csrf|{family}".encode(), hashlib.sha256).hexdigest()

    def open_session(self, account: str) -> tuple[str, str]:
        """A new session: (cookie value, its CSRF token)."""
        secret = secrets.token_urlsafe(32)
        family = "ses_" + secrets.token_hex(8)
        now = now_ms()
        self._insert(Credential(secret_sha256=sha256(secret), kind="session", account=account, family=family,
                                created_ms=now, expires_ms=now + self.options.session_ttl_s * 1000))
        return secret, self.csrf_token(family)

    def check_session(self, cookie: str) -> Checked:
        row = self._get(sha256(cookie))
        if row is None or row.kind != "session":
            raise Invalid("unknown session")
        self._usable(row)
        return Checked(row.account, row.family, row.created_ms)

    # --- tokens ----------------------------------------------------------------------------------

    def issue_tokens(self, account: str, family: str | None = None) -> TokenPair:
        family = family or "tok_" + secrets.token_hex(8)
        now = now_ms()
        refresh = "rt_" + secrets.token_urlsafe(32)
        self._insert(Credential(secret_sha256=sha256(refresh), kind="refresh", account=account, family=family,
                                created_ms=now, expires_ms=now + self.options.refresh_token_ttl_s * 1000))
        ttl = self.options.access_token_ttl_s
        claims = {"sub": account, "sid": family, "iat": now // 1000, "iat_ms": now, "exp": now // 1000 + ttl,
                  "jti": secrets.token_hex(8)}
        access = jwt.encode({"alg": "HS256"}, claims, self._key)
        return TokenPair(access, refresh, ttl)

    def check_access(self, token: str) -> Checked:
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
            jwt.JWTClaimsRegistry(exp={"essential": True}, sub={"essential": True}, sid={"essential": True}).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise Invalid(f"access token: {exc}") from None
        claims = decoded.claims
        if self._family_revoked(str(claims["sid"])):
            raise Invalid("token family revoked")
        return Checked(str(claims["sub"]), str(claims["sid"]), int(claims.get("iat_ms", claims.get("iat", 0) * 1000)))

    def refresh(self, refresh_token: str, still_valid: "callable[[Checked], bool]") -> TokenPair:  # type: ignore[valid-type]
        """Spends a refresh token for a new pair of the same family; a spent one revokes the family."""
        row = self._get(sha256(refresh_token))
        if row is None or row.kind != "refresh":
            raise Invalid("unknown refresh token")
        if row.spent_ms is not None:
            self.revoke_family(row.family)
            raise Invalid("refresh token used twice: its family is revoked")
        self._usable(row)
        if not still_valid(Checked(row.account, row.family, row.created_ms)):
            raise Invalid("revoked by the account")
        with self.engine.begin() as connection:
            spent = connection.execute(
                update(Credential).where(Credential.secret_sha256 == row.secret_sha256, Credential.spent_ms == None)  # type: ignore[arg-type]  # noqa: E711
                .values(spent_ms=now_ms())
            ).rowcount
        if spent != 1:  # another request spent it in between
            self.revoke_family(row.family)
            raise Invalid("refresh token used twice: its family is revoked")
        return self.issue_tokens(row.account, row.family)

    # --- revocation --------------------------------------------------------------------------------

    def _family_revoked(self, family: str) -> bool:
        if family in self._revoked:
            return True
        now = time.monotonic()
        if self._valid_until.get(family, 0.0) > now:
            return False
        with self.engine.connect() as connection:
            revoked = connection.execute(
                select(Credential.secret_sha256).where(Credential.family == family, Credential.revoked_ms != None).limit(1)  # type: ignore[arg-type]  # noqa: E711
            ).first()
        if revoked is not None:
            self._revoked.add(family)
            self._valid_until.pop(family, None)
            return True
        if len(self._valid_until) > 100_000:
            self._valid_until.clear()
        self._valid_until[family] = now + FAMILY_RECHECK_S
        return False

    def revoke_family(self, family: str) -> None:
        self._revoked.add(family)
        with self.engine.begin() as connection:
            connection.execute(update(Credential).where(Credential.family == family, Credential.revoked_ms == None)  # type: ignore[arg-type]  # noqa: E711
                               .values(revoked_ms=now_ms()))

    def revoke_account(self, account: str) -> None:
        with self.engine.connect() as connection:
            families = {f for (f,) in connection.execute(select(Credential.family).where(Credential.account == account))}  # type: ignore[arg-type]
        self._revoked |= families
        with self.engine.begin() as connection:
            connection.execute(update(Credential).where(Credential.account == account, Credential.revoked_ms == None)  # type: ignore[arg-type]  # noqa: E711
                               .values(revoked_ms=now_ms()))

    # --- rows ----------------------------------------------------------------------------------------

    def _insert(self, row: Credential) -> None:
        with self.engine.begin() as connection:
            connection.execute(Credential.__table__.insert(), [row.model_dump()])  # type: ignore[attr-defined]

    def _get(self, secret_sha256: str) -> Credential | None:
        with self.engine.connect() as connection:
            found = connection.execute(select(Credential.__table__).where(Credential.secret_sha256 == secret_sha256)).first()  # type: ignore[attr-defined]
        return Credential(**found._mapping) if found is not None else None

    def _usable(self, row: Credential) -> None:
        if row.revoked_ms is not None:
            raise Invalid("revoked")
        if now_ms() >= row.expires_ms:
            raise Invalid("expired")
