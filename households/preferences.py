"""What the preferences page shows and takes: every alert rule the engine knows, explained in one
sentence, and who in the household receives what. The rules and the delivery preferences are the
accounts surface's (``GET``/``PUT /v1/me/alerts``, ``/v1/me/notifications``); this module only says
how each field reads on a form and back."""

from __future__ import annotations

from typing import Any

#: Each editable alert rule: (kind of input, French sentence, English sentence).
RULES: dict[str, tuple[str, str, str]] = {
    "power_max_w": ("number", "Alerte quand la puissance dépasse ce nombre de watts.",
                    "Alert when the power goes over this many watts."),
    "power_min_w": ("number", "Alerte quand la puissance descend sous ce nombre de watts (un congélateur arrêté ?).",
                    "Alert when the power falls under this many watts (a freezer gone off?)."),
    "energy_day_max_wh": ("number", "Alerte quand l'énergie du jour dépasse ce nombre de Wh.",
                          "Alert when the day's energy goes over this many Wh."),
    "energy_day_min_wh": ("number", "Alerte quand une journée entière s'est close sous ce nombre de Wh.",
                          "Alert when a whole day closed under this many Wh."),
    "spending_day_max_eur": ("decimal", "Alerte quand la dépense du jour dépasse ce montant (ou est en passe de le faire).",
                             "Alert when the day's spending goes over this amount (or is on pace to)."),
    "spending_day_min_eur": ("decimal", "Alerte quand une journée entière a coûté moins que ce montant.",
                             "Alert when a whole day cost less than this amount."),
    "spending_month_max_eur": ("decimal", "Alerte quand la dépense du mois dépasse ce montant (ou est en passe de le faire).",
                               "Alert when the month's spending goes over this amount (or is on pace to)."),
    "spending_month_min_eur": ("decimal", "Alerte quand un mois entier a coûté moins que ce montant.",
                               "Alert when a whole month cost less than this amount."),
    "spending_pace": ("checkbox", "Prévenir dès que la dépense est en passe de dépasser sa limite.",
                      "Warn as soon as spending is on pace to pass its limit."),
    "disconnect": ("checkbox", "Alerte quand le compteur ne répond plus (coupure, module débranché).",
                   "Alert when the meter goes silent (power cut, module unplugged)."),
    "fuse_warning": ("checkbox", "Prévenir avant que le compteur ne coupe pour dépassement de puissance.",
                     "Warn before the meter cuts the supply for drawing too much."),
    "for_s": ("decimal", "Durée (s) pendant laquelle une condition doit tenir avant d'alerter.",
              "How long (s) a condition must hold before it alerts."),
    "repeat_s": ("decimal", "Délai (s) avant de répéter une alerte toujours en cours.",
                 "How long (s) before a still-open alert is repeated."),
}


def explain(field: str, lang: str) -> str:
    return RULES[field][1 if lang == "fr" else 2]


def rules_from_form(form: Any, current: dict[str, Any]) -> dict[str, Any]:
    """The PUT body: the rules in force with the form's fields in place of theirs.

    A number left empty switches the limit off (None); an unchecked box is False. A value that is
    not a number raises ValueError naming the field.
    """
    body = {k: v for k, v in current.items() if k not in ("meter", "updated_ms")}
    for field, (kind, _, _) in RULES.items():
        if kind == "checkbox":
            body[field] = form.get(field) == "on"
            continue
        text = str(form.get(field, "")).strip().replace(",", ".")
        if not text:
            body[field] = None if field not in ("for_s", "repeat_s") else current.get(field)
            continue
        try:
            body[field] = int(text) if kind == "number" else float(text)
        except ValueError:
            raise ValueError(f"{field}: {text!r} is not a number") from None
    return body
