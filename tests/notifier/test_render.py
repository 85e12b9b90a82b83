"""The wording: both languages, units per kind, what to do, the user's time zone, grouped messages,
and the email built once per kind giving the same message as building it whole."""

from __future__ import annotations

import email
import email.policy
from zoneinfo import ZoneInfo

import pytest

from notifier.channels.email import EmailChannel
from notifier.notification import Notification
from notifier.render import Renderer
from quartier.events import AlertEvent, alert_id
from quartier.settings import SmtpSettings

AT_MS = 1_790_000_000_000  # 2026-09-21 14:13 UTC, 16:13 in Paris


def _alert(kind: str, state: str = "raised", value: float = 0.0, threshold: float = 0.0, **detail: float) -> AlertEvent:
    return AlertEvent(
        id=alert_id("012345678901", kind, AT_MS), meter="012345678901", kind=kind, state=state,  # type: ignore[arg-type]
        value=value, threshold=threshold, at_ms=AT_MS, episode_start_ms=AT_MS, detail=detail,
    )


@pytest.mark.parametrize(
    ("alert", "language", "title", "summary", "advice"),
    [
        (_alert("power_above", value=6_234, threshold=6_000), "fr", "Puissance au-dessus de votre limite",
         "6\u202f234 W relevés le 21/09/2026 16:13, pour un seuil de 6\u202f000 W.", "Éteignez un gros appareil"),
        (_alert("power_above", value=6_234, threshold=6_000), "en", "Power above your limit",
         "6,234 W measured at 2026-09-21 16:13, against a threshold of 6,000 W.", "Switch off a large appliance"),
        (_alert("energy_day_above", "resolved", 11_900, 12_000), "fr",
         "Consommation du jour au-dessus de votre limite : situation rétablie",
         "Revenu à 11,9 kWh le 21/09/2026 16:13 (seuil : 12,0 kWh).", "Rien à faire."),
        (_alert("spending_month_above", value=84.5, threshold=80), "en", "This month's spending above your budget",
         "€84.50 measured at 2026-09-21 16:13, against a threshold of €80.00.", "off-peak"),
        (_alert("spending_day_above", value=4.2, threshold=3), "fr", "Dépense du jour au-dessus de votre budget",
         "4,20 € relevés le 21/09/2026 16:13, pour un seuil de 3,00 €.", "heures creuses"),
        (_alert("disconnected", value=45, threshold=30), "en", "Your meter has stopped reporting",
         "No reading for 45 s (at 2026-09-21 16:13).", "Wi-Fi module"),
        (_alert("fuse_limit", value=9_800, threshold=9_000, seconds_to_cut=150), "fr",
         "Puissance proche du seuil de coupure", "9\u202f800 VA relevés le 21/09/2026 16:13, pour un seuil de 9\u202f000 VA.",
         "coupe le courant dans environ 2 min"),
        (_alert("fuse_limit", value=9_800, threshold=9_000, seconds_to_cut=40), "en",
         "Power close to your cut-off limit", "9,800 VA measured at 2026-09-21 16:13, against a threshold of 9,000 VA.",
         "the meter cuts the power in about 40 s"),
    ],
)
def test_words_in_both_languages_with_units_and_what_to_do(
    alert: AlertEvent, language: str, title: str, summary: str, advice: str
) -> None:
    words = Renderer().render(alert, language)  # type: ignore[arg-type]
    assert words.title == title
    assert words.summary == summary
    assert advice in words.advice
    assert summary in words.text and advice in words.text
    assert alert.id in words.text and alert.id in words.html


def test_times_are_shown_in_the_users_time_zone() -> None:
    words = Renderer().render(_alert("power_above", value=1, threshold=1), "en", ZoneInfo("America/Montreal"))
    assert "2026-09-21 10:13" in words.summary


def test_html_values_are_escaped_and_text_is_not() -> None:
    alert = AlertEvent(id="<b>id</b>", meter=None, kind="ingest_down", state="raised", value=90, threshold=15,
                       at_ms=AT_MS, episode_start_ms=AT_MS)
    words = Renderer().render(alert, "en")
    assert "&lt;b&gt;id&lt;/b&gt;" in words.html and "<b>id</b>" not in words.html
    assert "<b>id</b>" in words.text and "all meters" in words.text


def test_a_storm_reads_as_one_message() -> None:
    alerts = [AlertEvent(id=f"a{i}", meter=f"20000000000{i}", kind="disconnected", state="raised", value=40, threshold=30,
                         at_ms=AT_MS, episode_start_ms=AT_MS) for i in range(7)]
    fr = Renderer().render_group(alerts, "fr")
    en = Renderer().render_group(alerts, "en")
    assert fr.title == "7 alertes sur vos compteurs" and en.title == "7 alerts on your meters"
    assert en.summary.startswith("Your meter has stopped reporting and 6 more.")
    assert all(f"20000000000{i}" in en.text and f"20000000000{i}" in en.html for i in range(7))


@pytest.mark.parametrize("language", ["fr", "en"])
def test_email_built_once_per_kind_parses_to_the_rendered_words(language: str) -> None:
    channel = EmailChannel(SmtpSettings(sender="Quartier Alertes <alerts@quartier.test>"), Renderer())
    alert = _alert("spending_day_above", value=4.2, threshold=3)
    first = Notification((alert,), "email", "one@example.test", language)  # type: ignore[arg-type]
    second = Notification((_alert("spending_day_above", value=7.75, threshold=3),), "email", "two@example.test", language)  # type: ignore[arg-type]
    for notification in (first, second):
        raw = channel.message_bytes(notification, "<id@quartier.test>")
        assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        words = Renderer().render(notification.alert, language)  # type: ignore[arg-type]
        assert message["To"] == notification.address and message["Subject"] == words.title
        assert message["Content-Language"] == language and message["Message-ID"] == "<id@quartier.test>"
        assert message["X-Quartier-Alert-Id"] == notification.alert.id
        assert message.get_content_type() == "multipart/alternative"
        assert message.get_body(("plain",)).get_content() == words.text.replace("\n", "\r\n") or \
            message.get_body(("plain",)).get_content().replace("\r\n", "\n") == words.text
        assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == words.html
    assert len(channel._skeletons) == 1  # both mails from one skeleton
