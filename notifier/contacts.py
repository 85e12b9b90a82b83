"""Who to tell about a meter's alerts: its household's devices (push tokens), email and language.

A device token belongs to one meter at a time: registering it again under another meter moves
it (a phone that changed hands). Tokens FCM reports as unregistered are removed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field as PydanticField, ValidationError, field_validator
from sqlalchemy import Engine, delete
from sqlmodel import Field, Session, SQLModel, select

Language = Literal["fr", "en"]


class Contact(SQLModel, table=True):
    __tablename__ = "notifier_contact"

    meter: str = Field(primary_key=True)
    email: str | None = None
    language: str = "fr"
    updated_ms: int = 0


class DeviceToken(SQLModel, table=True):
    __tablename__ = "notifier_device_token"

    token: str = Field(primary_key=True)
    meter: str = Field(index=True)
    registered_ms: int = 0


TABLES = (Contact, DeviceToken)


class Registration(BaseModel):
    """One household's contact details, validated; errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter: Annotated[str, PydanticField(pattern=r"^[0-9]{12}$", description="Linky meter address, 12 digits")]
    tokens: tuple[Annotated[str, PydanticField(min_length=1, max_length=4096, pattern=r"^\S+$")], ...] = ()
    email: str | None = None
    language: Language | None = None

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
        return address.addr_spec


class RegistrationError(ValueError):
    """Invalid registration input; the message names the line (for files) and the field."""


@dataclass(frozen=True)
class Recipients:
    """Where one meter's alerts go."""

    meter: str
    email: str | None
    language: Language
    tokens: tuple[str, ...]


def validate(values: dict[str, object], where: str = "") -> Registration:
    try:
        return Registration.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}" for error in exc.errors()
        )
        raise RegistrationError(f"{where}{problems}") from None


def read_registrations(path: Path) -> list[Registration]:
    """Registrations from a CSV file with the columns meter,token,email,language (one row per
    device; a meter's rows are merged). Any bad row rejects the whole file, naming line and field."""
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
            for name in ("email", "language"):
                if value := (row[name] or "").strip():
                    if merged.get(name) not in (None, value):
                        raise RegistrationError(f"{where}{name}: {value!r} differs from an earlier row for {meter}")
                    merged[name] = value
            validate({**merged, "tokens": [token] if token else []}, where)
    return [validate(values, f"{path}: ") for values in rows.values()]


class ContactStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, registrations: Sequence[Registration]) -> None:
        """Adds or updates households, all in one transaction. Fields left out keep their value."""
        now = int(time.time() * 1000)
        with Session(self.engine) as session:
            for registration in registrations:
                contact = session.get(Contact, registration.meter) or Contact(meter=registration.meter)
                if registration.email is not None:
                    contact.email = registration.email
                if registration.language is not None:
                    contact.language = registration.language
                contact.updated_ms = now
                session.add(contact)
                for token in registration.tokens:
                    device = session.get(DeviceToken, token) or DeviceToken(token=token, meter=registration.meter)
                    device.meter = registration.meter
                    device.registered_ms = now
                    session.add(device)
            session.commit()

    def recipients(self, meters: Iterable[str]) -> dict[str, Recipients]:
        """Each known meter's recipients; meters with no contact and no device are left out."""
        wanted = sorted(set(meters))
        if not wanted:
            return {}
        with Session(self.engine) as session:
            contacts = {c.meter: c for c in session.exec(select(Contact).where(Contact.meter.in_(wanted)))}  # type: ignore[attr-defined]
            tokens: dict[str, list[str]] = {}
            for device in session.exec(
                select(DeviceToken).where(DeviceToken.meter.in_(wanted)).order_by(DeviceToken.token)  # type: ignore[attr-defined]
            ):
                tokens.setdefault(device.meter, []).append(device.token)
        out = {}
        for meter in wanted:
            contact = contacts.get(meter)
            if contact is None and meter not in tokens:
                continue
            language: Language = "en" if contact is not None and contact.language == "en" else "fr"
            out[meter] = Recipients(
                meter=meter,
                email=contact.email if contact else None,
                language=language,
                tokens=tuple(tokens.get(meter, ())),
            )
        return out

    def remove_tokens(self, tokens: Iterable[str]) -> int:
        """Forgets device tokens (FCM said they are unregistered); returns how many were known."""
        gone = sorted(set(tokens))
        if not gone:
            return 0
        with Session(self.engine) as session:
            result = session.exec(delete(DeviceToken).where(DeviceToken.token.in_(gone)))  # type: ignore[attr-defined,call-overload]
            session.commit()
            return int(result.rowcount or 0)
