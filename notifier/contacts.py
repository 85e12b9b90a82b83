"""Who to tell about an alert, and how: users, the meters they hear of, their devices and preferences.

A *user* is one person: a household member (user id = account id), an operator, or a contact
registered straight into the store (the stages' tests; a building manager). One email address, one
language, one time zone, optional quiet hours, the channels they want and the alert kinds they
muted. A meter's alerts go to every user listed for it: each member of the household that paired
it. Device tokens belong to a user: registering a token again under another user moves it (a phone
that changed hands). Tokens FCM reports as unregistered are removed. Operators also receive
operator-level alerts (``meter`` None).

The rows of household members and operators are a projection of ``accounts.events``
(notifier/accounts_projection.py), rewritten from the log at every start; ``quartier notifier
register`` appends accounts events rather than writing here. This store is the one place the
pipeline reads delivery preferences from (docs/notifier.md): ``AlertRules`` on ``alerts.rules`` says
*what* raises an alert; this says *who* hears of it, *where* and *when*.
"""

from __future__ import annotations

import csv
import datetime
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field as PydanticField, ValidationError, field_validator
from sqlalchemy import Engine, delete
from sqlmodel import Field, Session, SQLModel, select

from quartier.events import AlertKind, Channel
from quartier.sql import BigInt

Language = Literal["fr", "en"]
ALL_CHANNELS: tuple[Channel, ...] = ("push", "email")
ALL_KINDS: tuple[str, ...] = get_args(AlertKind)


class User(SQLModel, table=True):
    __tablename__ = "notifier_user"

    id: str = Field(primary_key=True)
    email: str | None = None
    language: str = "fr"
    time_zone: str = "Europe/Paris"
    quiet_hours: str | None = None  # "22:00-07:00" in the user's time zone, or None
    channels: str = "push,email"
    muted_kinds: str = ""  # comma-separated alert kinds the user does not want
    operator: bool = False
    updated_ms: int = Field(default=0, sa_type=BigInt)


class MeterOwner(SQLModel, table=True):
    """Who hears of a meter's alerts: one user per registration, every member of its household when
    the accounts projection wrote it (notifier/accounts_projection.py)."""

    __tablename__ = "notifier_meter"

    meter: str = Field(primary_key=True)
    user_id: str = Field(primary_key=True, index=True)


class DeviceToken(SQLModel, table=True):
    __tablename__ = "notifier_device"

    token: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    registered_ms: int = Field(default=0, sa_type=BigInt)


TABLES = (User, MeterOwner, DeviceToken)


@dataclass(frozen=True)
class QuietPeriod:
    """A daily period, in minutes after local midnight; it may wrap past midnight (22:00-07:00)."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> "QuietPeriod":
        try:
            start, end = (datetime.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"quiet hours must look like 22:00-07:00, got {text!r}") from None
        quiet = cls(start.hour * 60 + start.minute, end.hour * 60 + end.minute)
        if quiet.start_min == quiet.end_min:
            raise ValueError(f"quiet hours {text!r} start and end at the same time")
        return quiet

    def __str__(self) -> str:
        return f"{self.start_min // 60:02d}:{self.start_min % 60:02d}-{self.end_min // 60:02d}:{self.end_min % 60:02d}"

    def end_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The end of the quiet period ``moment`` (timezone-aware, local) falls in, or None if it
        falls in none. Computed on the wall clock, so a DST change inside the night is honoured."""
        minute = moment.hour * 60 + moment.minute
        wraps = self.start_min > self.end_min
        inside = (self.start_min <= minute or minute < self.end_min) if wraps else self.start_min <= minute < self.end_min
        if not inside:
            return None
        end_day = moment.date()
        if wraps and minute >= self.start_min:
            end_day += datetime.timedelta(days=1)
        end = datetime.datetime.combine(end_day, datetime.time(self.end_min // 60, self.end_min % 60), moment.tzinfo)
        # Through UTC, so that a wall time that does not exist (DST gap) lands just after the jump.
        return end.astimezone(datetime.timezone.utc).astimezone(moment.tzinfo)


class Registration(BaseModel):
    """One user's contact details and preferences, validated; errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter: Annotated[str, PydanticField(pattern=r"^[0-9]{12}$", description="Linky meter address, 12 digits")] | None = None
    user: Annotated[str, PydanticField(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")] | None = None
    tokens: tuple[Annotated[str, PydanticField(min_length=1, max_length=4096, pattern=r"^\S+$")], ...] = ()
    email: str | None = None
    language: Language | None = None
    time_zone: str | None = None
    quiet_hours: str | None = None  # "22:00-07:00"; "" turns quiet hours off
    channels: tuple[Channel, ...] | None = None
    muted_kinds: tuple[AlertKind, ...] | None = None
    operator: bool | None = None

    @field_validator("email")
    @classmethod
    def _email_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = Address(addr_spec=value.strip())
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not an email address: {value!r} ({exc})") from None
        if not address.username or "." not in address.domain:
            raise ValueError(f"not an email address: {value!r}")
        if not address.addr_spec.isascii():
            # Internationalised addresses need SMTPUTF8 end to end; refused rather than half-supported.
            raise ValueError(f"only ASCII email addresses are supported: {value!r}")
        return address.addr_spec

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        return str(QuietPeriod.parse(value))

    @property
    def user_id(self) -> str:
        return self.user or self.meter or ""


class RegistrationError(ValueError):
    """Invalid registration input; the message names the line (for files) and the field."""


@dataclass(frozen=True)
class Recipient:
    """One user's addresses and delivery preferences, as the pipeline needs them."""

    user: str
    email: str | None
    language: Language
    tokens: tuple[str, ...]
    time_zone: ZoneInfo
    quiet_hours: QuietPeriod | None
    channels: frozenset[str]
    muted_kinds: frozenset[str]


def validate(values: dict[str, object], where: str = "") -> Registration:
    try:
        registration = Registration.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}" for error in exc.errors()
        )
        raise RegistrationError(f"{where}{problems}") from None
    if registration.meter is None and registration.user is None:
        raise RegistrationError(f"{where}meter: a meter or a user is needed")
    return registration


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


#: Optional CSV columns and how a cell becomes a registration value.
#: Ids per ``IN (...)`` query: SQLite allows 32,766 bound parameters.
_IN_CHUNK = 10_000
_OPTIONAL_COLUMNS = {"user": str, "time_zone": str, "quiet_hours": str, "channels": _split, "muted_kinds": _split}


def read_registrations(path: Path) -> list[Registration]:
    """Registrations from a CSV file with the columns meter,token,email,language (one row per
    device; a meter's rows are merged) and optionally user,time_zone,quiet_hours,channels,
    muted_kinds (lists separated by commas). Any bad row rejects the whole file, naming line and field."""
    rows: dict[str, dict[str, object]] = {}
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        missing = {"meter", "token", "email", "language"} - set(reader.fieldnames or ())
        if missing:
            raise RegistrationError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            where = f"{path}:{reader.line_num}: "
            meter = (row["meter"] or "").strip()
            merged = rows.setdefault(meter, {"meter": meter, "tokens": []})
            if token := (row["token"] or "").strip():
                merged["tokens"].append(token)  # type: ignore[attr-defined]
            for name in ("email", "language", *_OPTIONAL_COLUMNS):
                if value := (row.get(name) or "").strip():
                    parsed = _OPTIONAL_COLUMNS.get(name, str)(value)
                    if merged.get(name) not in (None, parsed):
                        raise RegistrationError(f"{where}{name}: {value!r} differs from an earlier row for {meter}")
                    merged[name] = parsed
            validate({**merged, "tokens": [token] if token else []}, where)
    return [validate(values, f"{path}: ") for values in rows.values()]


class ContactStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, registrations: Sequence[Registration]) -> None:
        """Adds or updates users, all in one transaction. Fields left out keep their value."""
        now = int(time.time() * 1000)
        with Session(self.engine) as session:
            for registration in registrations:
                user_id = registration.user_id
                user = session.get(User, user_id) or User(id=user_id)
                if registration.email is not None:
                    user.email = registration.email
                if registration.language is not None:
                    user.language = registration.language
                if registration.time_zone is not None:
                    user.time_zone = registration.time_zone
                if registration.quiet_hours is not None:
                    user.quiet_hours = registration.quiet_hours or None
                if registration.channels is not None:
                    user.channels = ",".join(registration.channels)
                if registration.muted_kinds is not None:
                    user.muted_kinds = ",".join(registration.muted_kinds)
                if registration.operator is not None:
                    user.operator = registration.operator
                user.updated_ms = now
                session.add(user)
                if registration.meter is not None:
                    # A registration gives the meter to one user: whoever had it before loses it.
                    session.exec(delete(MeterOwner).where(MeterOwner.meter == registration.meter, MeterOwner.user_id != user_id))  # type: ignore[call-overload,arg-type]
                    if session.get(MeterOwner, (registration.meter, user_id)) is None:
                        session.add(MeterOwner(meter=registration.meter, user_id=user_id))
                for token in registration.tokens:
                    device = session.get(DeviceToken, token) or DeviceToken(token=token, user_id=user_id)
                    device.user_id = user_id
                    device.registered_ms = now
                    session.add(device)
            session.commit()

    def recipients_by_meter(self, meters: Iterable[str | None]) -> dict[str | None, list[Recipient]]:
        """For each meter, the user who owns it (a list of one, or none); for ``None`` (operator-level
        alerts), every operator. Reads columns, not ORM objects: a window of 2,000 alerts took 0.1-0.2 s
        building objects it only read (docs/notifier.md)."""
        wanted = sorted({m for m in meters if m is not None})
        with Session(self.engine) as session:
            owners: dict[str, list[str]] = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                rows = session.exec(
                    select(MeterOwner.meter, MeterOwner.user_id).where(  # type: ignore[call-overload]
                        MeterOwner.meter.in_(wanted[start : start + _IN_CHUNK])  # type: ignore[attr-defined]
                    ).order_by(MeterOwner.meter, MeterOwner.user_id)
                )
                for meter, user in rows:
                    owners.setdefault(meter, []).append(user)
            operator_ids = set(session.exec(select(User.id).where(User.operator == True)))  # noqa: E712
            recipients = self._recipients(session, {u for users in owners.values() for u in users} | operator_ids)
        out: dict[str | None, list[Recipient]] = {
            meter: found for meter, users in owners.items() if (found := [recipients[u] for u in users if u in recipients])
        }
        out[None] = [recipients[u] for u in sorted(operator_ids) if u in recipients]
        return out

    def recipients(self, users: Iterable[str]) -> dict[str, Recipient]:
        with Session(self.engine) as session:
            return self._recipients(session, set(users))

    def _recipients(self, session: Session, user_ids: set[str]) -> dict[str, Recipient]:
        if not user_ids:
            return {}
        wanted = sorted(user_ids)
        columns = (User.id, User.email, User.language, User.time_zone, User.quiet_hours, User.channels, User.muted_kinds)
        users: list[tuple[str, str | None, str, str, str | None, str, str]] = []
        tokens: dict[str, list[str]] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            users += session.exec(select(*columns).where(User.id.in_(chunk)))  # type: ignore[call-overload,attr-defined]
            for user_id, token in session.exec(
                select(DeviceToken.user_id, DeviceToken.token).where(DeviceToken.user_id.in_(chunk))  # type: ignore[call-overload,attr-defined]
            ):
                tokens.setdefault(user_id, []).append(token)
        return {
            user_id: Recipient(
                user=user_id,
                email=email,
                language="en" if language == "en" else "fr",
                tokens=tuple(sorted(tokens.get(user_id, ()))),
                time_zone=ZoneInfo(time_zone),  # ZoneInfo keeps one instance per key
                quiet_hours=QuietPeriod.parse(quiet_hours) if quiet_hours else None,
                channels=frozenset(_split(channels)),
                muted_kinds=frozenset(_split(muted_kinds)),
            )
            for user_id, email, language, time_zone, quiet_hours, channels, muted_kinds in users
        }

    def quiet_periods(self, users: Iterable[str]) -> dict[str, QuietPeriod]:
        """The quiet hours of those users who set some."""
        wanted = sorted(set(users))
        if not wanted:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(
                select(User.id, User.quiet_hours).where(User.id.in_(wanted), User.quiet_hours != None)  # type: ignore[attr-defined]  # noqa: E711
            )
            return {user: QuietPeriod.parse(text) for user, text in rows if text}

    def remove_tokens(self, tokens: Iterable[str]) -> int:
        """Forgets device tokens (FCM said they are unregistered); returns how many were known."""
        gone = sorted(set(tokens))
        if not gone:
            return 0
        with Session(self.engine) as session:
            result = session.exec(delete(DeviceToken).where(DeviceToken.token.in_(gone)))  # type: ignore[attr-defined,call-overload]
            session.commit()
            return int(result.rowcount or 0)
