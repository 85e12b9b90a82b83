"""The words of a notification, from Jinja2 templates per language (``templates/<lang>/``).

``strings.j2`` holds the wording (macros ``title`` and ``summary``) that the push and both
email parts share, so a push and an email about one alert always say the same thing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from quartier.events import AlertEvent
from notifier.contacts import Language

#: Linky meters are French: times are shown in French local time whatever the language.
TIMEZONE = ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class RenderedAlert:
    title: str  # push title and email subject
    summary: str  # push body
    text: str  # email text/plain part
    html: str  # email text/html part


def _number(value: float, language: str, digits: int = 0) -> str:
    text = f"{value:,.{digits}f}"
    if language == "fr":
        # 1,234.5 -> 1 234,5 (narrow no-break space between thousands)
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def _local_time(epoch_ms: int, language: str) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, TIMEZONE)
    return moment.strftime("%d/%m/%Y %H:%M" if language == "fr" else "%Y-%m-%d %H:%M")


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("notifier", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["number"] = _number
        self.env.filters["local_time"] = _local_time
        self._cache: dict[tuple[str, str, str], RenderedAlert] = {}

    def render(self, alert: AlertEvent, language: Language) -> RenderedAlert:
        # Every recipient of one alert in one language reads the same words: render them once.
        cache_key = (alert.id, alert.state, language)
        if (cached := self._cache.get(cache_key)) is not None:
            return cached
        context = {"alert": alert, "lang": language}
        strings = self.env.get_template(f"{language}/strings.j2").make_module(context)
        rendered = RenderedAlert(
            title=str(strings.title()).strip(),  # type: ignore[attr-defined]
            summary=str(strings.summary()).strip(),  # type: ignore[attr-defined]
            text=self.env.get_template(f"{language}/email.txt.j2").render(context),
            html=self.env.get_template(f"{language}/email.html.j2").render(context),
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = rendered
        return rendered
