"""The words of a notification, from Jinja2 templates per language (``templates/<lang>/``).

``strings.j2`` holds the wording (macros ``title``, ``summary``, ``advice``) that the push and both
email parts share, so a push and an email about one alert always say the same thing.

Rendering Jinja per message costs far more than sending it, so a single alert's templates are
rendered **once per (kind, state, language)** with slot markers where the values go (value,
threshold, time, meter, alert id, seconds to cut), and each message fills the slots with its values,
formatted here in the user's language and time zone. A grouped message (a storm) is rare and is
rendered whole.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from quartier.events import AlertEvent
from notifier.contacts import Language

#: The slots a single-alert template may use; each is filled with an already formatted string.
SLOTS = ("value", "threshold", "at", "meter", "alert_id", "seconds_to_cut")
#: Slot markers: a character no wording, value or address contains.
MARK = "\x00"
_SLOT = re.compile(f"{MARK}([a-z_]+){MARK}")
DEFAULT_ZONE = ZoneInfo("Europe/Paris")


def slot(name: str) -> str:
    return f"{MARK}{name}{MARK}"


@dataclass(frozen=True)
class Slotted:
    """A rendered text with slots: literal parts at even indexes, slot names at odd ones."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Slotted":
        return cls(tuple(_SLOT.split(text)))

    def fill(self, values: Mapping[str, str]) -> str:
        parts = list(self.parts)
        for i in range(1, len(parts), 2):
            parts[i] = values[parts[i]]
        return "".join(parts)


@dataclass(frozen=True)
class CompiledAlert:
    """One (kind, state, language)'s wording with slots; ``html`` slots take escaped values."""

    title: Slotted
    summary: Slotted
    advice: Slotted
    text: Slotted
    html: Slotted


@dataclass(frozen=True)
class RenderedAlert:
    title: str  # push title and email subject
    summary: str  # push body
    advice: str  # what to do
    text: str  # email text/plain part
    html: str  # email text/html part


def number(value: float, language: str, digits: int = 0) -> str:
    text = f"{value:,.{digits}f}"
    if language == "fr":
        # 1,234.5 -> 1 234,5 (narrow no-break space between thousands)
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def duration(seconds: float, language: str) -> str:
    if seconds < 120:
        return f"{number(seconds, language)} s"
    if seconds < 7200:
        return f"{number(seconds / 60, language)} min"
    return f"{number(seconds / 3600, language, 1)} h"


def measure(kind: str, value: float, language: str) -> str:
    """A value of an alert kind with its unit: power W, fuse VA, energy Wh (shown in kWh),
    spending EUR, disconnection seconds."""
    if kind.startswith("power"):
        return f"{number(value, language)} W"
    if kind == "fuse_limit":
        return f"{number(value, language)} VA"
    if kind.startswith("energy"):
        return f"{number(value / 1000, language, 1)} kWh"
    if kind.startswith("spending"):
        amount = number(value, language, 2)
        return f"{amount} €" if language == "fr" else f"€{amount}"
    return duration(value, language)


def local_time(epoch_ms: int, zone: ZoneInfo, language: str) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, zone)
    return moment.strftime("%d/%m/%Y %H:%M" if language == "fr" else "%Y-%m-%d %H:%M")


def slot_values(alert: AlertEvent, language: Language, zone: ZoneInfo = DEFAULT_ZONE) -> dict[str, str]:
    to_cut = alert.detail.get("seconds_to_cut")
    return {
        "value": measure(alert.kind, alert.value, language),
        "threshold": measure(alert.kind, alert.threshold, language),
        "at": local_time(alert.at_ms, zone, language),
        "meter": alert.meter or ("all meters" if language == "en" else "tous les compteurs"),
        "alert_id": alert.id,
        "seconds_to_cut": duration(to_cut, language) if to_cut is not None else "?",
    }


def escaped(values: Mapping[str, str]) -> dict[str, str]:
    return {name: str(escape(value)) for name, value in values.items()}


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("notifier", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._compiled: dict[tuple[str, str, str], CompiledAlert] = {}

    def compiled(self, kind: str, state: str, language: Language) -> CompiledAlert:
        key = (kind, state, language)
        if (found := self._compiled.get(key)) is not None:
            return found
        context: dict[str, Any] = {"kind": kind, "state": state, "lang": language, **{n: slot(n) for n in SLOTS}}
        strings = self.env.get_template(f"{language}/strings.j2").make_module(context)
        compiled = CompiledAlert(
            title=Slotted.parse(str(strings.title()).strip()),  # type: ignore[attr-defined]
            summary=Slotted.parse(str(strings.summary()).strip()),  # type: ignore[attr-defined]
            advice=Slotted.parse(str(strings.advice()).strip()),  # type: ignore[attr-defined]
            text=Slotted.parse(self.env.get_template(f"{language}/email.txt.j2").render(context)),
            html=Slotted.parse(self.env.get_template(f"{language}/email.html.j2").render(context)),
        )
        self._compiled[key] = compiled
        return compiled

    def render(self, alert: AlertEvent, language: Language, zone: ZoneInfo = DEFAULT_ZONE) -> RenderedAlert:
        compiled = self.compiled(alert.kind, alert.state, language)
        values = slot_values(alert, language, zone)
        return RenderedAlert(
            title=compiled.title.fill(values),
            summary=compiled.summary.fill(values),
            advice=compiled.advice.fill(values),
            text=compiled.text.fill(values),
            html=compiled.html.fill(escaped(values)),
        )

    def render_push(self, alert: AlertEvent, language: Language, zone: ZoneInfo = DEFAULT_ZONE) -> RenderedAlert:
        """The push's words only (title, summary, advice): the email parts stay empty."""
        compiled = self.compiled(alert.kind, alert.state, language)
        values = slot_values(alert, language, zone)
        return RenderedAlert(
            title=compiled.title.fill(values), summary=compiled.summary.fill(values),
            advice=compiled.advice.fill(values), text="", html="",
        )

    def render_group(self, alerts: Sequence[AlertEvent], language: Language, zone: ZoneInfo = DEFAULT_ZONE) -> RenderedAlert:
        """One message for several alerts of one user, most urgent first as given."""
        items = []
        for alert in alerts:
            single = self.render(alert, language, zone)
            items.append({"title": single.title, "summary": single.summary, "meter": slot_values(alert, language, zone)["meter"]})
        context = {"items": items, "lang": language}
        group = self.env.get_template(f"{language}/group.j2").make_module(context)
        return RenderedAlert(
            title=str(group.title()).strip(),  # type: ignore[attr-defined]
            summary=str(group.summary()).strip(),  # type: ignore[attr-defined]
            advice="",
            text=self.env.get_template(f"{language}/group.txt.j2").render(context),
            html=self.env.get_template(f"{language}/group.html.j2").render(context),
        )
