"""The web pages' words in French and English (the household's language, or the browser's)."""

from __future__ import annotations

from starlette.requests import Request

LANGUAGES = ("fr", "en")

STRINGS: dict[str, dict[str, str]] = {
    "title": {"fr": "Mon foyer", "en": "My home"},
    "nav_home": {"fr": "Accueil", "en": "Home"},
    "nav_consumption": {"fr": "Consommation", "en": "Consumption"},
    "nav_bill": {"fr": "Facture", "en": "Bill"},
    "nav_alerts": {"fr": "Alertes", "en": "Alerts"},
    "nav_compare": {"fr": "Voisinage", "en": "Neighbours"},
    "nav_solar": {"fr": "Solaire", "en": "Solar"},
    "nav_export": {"fr": "Export", "en": "Export"},
    "live_power": {"fr": "Puissance maintenant", "en": "Power now"},
    "live_cost": {"fr": "Coût par heure", "en": "Cost per hour"},
    "fuse_headroom": {"fr": "Marge avant disjonction", "en": "Headroom before the fuse trips"},
    "no_reading": {"fr": "Pas encore de relevé", "en": "No reading yet"},
    "today": {"fr": "Aujourd'hui", "en": "Today"},
    "this_month": {"fr": "Ce mois-ci", "en": "This month"},
    "price_now": {"fr": "Prix en vigueur", "en": "Price now"},
    "tempo_today": {"fr": "Couleur Tempo du jour", "en": "Tempo colour today"},
    "tempo_tomorrow": {"fr": "Couleur Tempo de demain", "en": "Tempo colour tomorrow"},
    "not_known_yet": {"fr": "pas encore connue", "en": "not known yet"},
    "blue": {"fr": "bleu", "en": "blue"}, "white": {"fr": "blanc", "en": "white"}, "red": {"fr": "rouge", "en": "red"},
    "range": {"fr": "Période", "en": "Range"},
    "unit": {"fr": "Unité", "en": "Unit"},
    "show": {"fr": "Afficher", "en": "Show"},
    "total": {"fr": "Total", "en": "Total"},
    "bucket_start": {"fr": "Début", "en": "Start"},
    "points_table": {"fr": "Les valeurs en tableau", "en": "The values as a table"},
    "bill_period": {"fr": "Période de facturation", "en": "Billing period"},
    "energy": {"fr": "Énergie", "en": "Energy"},
    "subscription": {"fr": "Abonnement", "en": "Subscription"},
    "so_far": {"fr": "À ce jour", "en": "So far"},
    "projected": {"fr": "Projection en fin de période", "en": "Projected at the period's end"},
    "how_projected": {"fr": "Méthode", "en": "How"},
    "power_advice": {"fr": "Puissance souscrite", "en": "Subscribed power"},
    "verdict_too_high": {"fr": "trop élevée pour vos pics des 12 derniers mois", "en": "too high for your last 12 months' peaks"},
    "verdict_too_low": {"fr": "trop faible : vos pics l'ont dépassée", "en": "too low: your peaks went over it"},
    "verdict_right": {"fr": "adaptée à vos pics", "en": "right for your peaks"},
    "verdict_unknown": {"fr": "pas assez de relevés pour juger", "en": "not enough readings to judge"},
    "at_stake": {"fr": "en jeu par an", "en": "at stake a year"},
    "recommended": {"fr": "conseillée", "en": "recommended"},
    "peak": {"fr": "Pic", "en": "Peak"},
    "alert_history": {"fr": "Historique des alertes", "en": "Alert history"},
    "no_alerts": {"fr": "Aucune alerte", "en": "No alert"},
    "raised": {"fr": "Déclenchée", "en": "Raised"},
    "resolved": {"fr": "Terminée", "en": "Resolved"},
    "ongoing": {"fr": "en cours", "en": "ongoing"},
    "acknowledge": {"fr": "J'ai vu", "en": "Acknowledge"},
    "acknowledged_by": {"fr": "Vue par", "en": "Acknowledged by"},
    "snooze": {"fr": "Mettre en pause", "en": "Snooze"},
    "snoozed_until": {"fr": "En pause jusqu'à", "en": "Snoozed until"},
    "minutes": {"fr": "minutes", "en": "minutes"},
    "older": {"fr": "Plus anciennes", "en": "Older"},
    "compare_title": {"fr": "Comparé aux foyers semblables", "en": "Compared with similar homes"},
    "your_day": {"fr": "Votre journée type", "en": "Your typical day"},
    "typical_day": {"fr": "Journée type des foyers semblables", "en": "Similar homes' typical day"},
    "position_below": {"fr": "Vous consommez moins que la plupart", "en": "You use less than most"},
    "position_within": {"fr": "Vous consommez comme la plupart", "en": "You use about as much as most"},
    "position_above": {"fr": "Vous consommez plus que la plupart", "en": "You use more than most"},
    "solar_title": {"fr": "Production solaire", "en": "Solar"},
    "exported": {"fr": "Envoyé au réseau (30 jours)", "en": "Sent to the grid (30 days)"},
    "market_sold": {"fr": "Vendu sur le marché local", "en": "Sold on the local market"},
    "market_earned": {"fr": "Gagné", "en": "Earned"},
    "market_settled": {"fr": "dont réglé", "en": "of which settled"},
    "export_title": {"fr": "Exporter mes relevés (CSV)", "en": "Export my readings (CSV)"},
    "from": {"fr": "Du", "en": "From"}, "to": {"fr": "Au", "en": "To"},
    "resolution": {"fr": "Résolution", "en": "Resolution"},
    "download": {"fr": "Télécharger", "en": "Download"},
    "sign_in_needed": {"fr": "Connectez-vous pour voir votre foyer.", "en": "Sign in to see your home."},
    "sign_in": {"fr": "Se connecter", "en": "Sign in"},
    "no_meter": {"fr": "Votre foyer n'a pas encore de compteur associé.", "en": "Your home has no paired meter yet."},
    "power_limit": {"fr": "Alerte si la puissance dépasse (W)", "en": "Alert when the power goes over (W)"},
    "save": {"fr": "Enregistrer", "en": "Save"},
    "language": {"fr": "Langue", "en": "Language"},
}


def language(request: Request) -> str:
    chosen = request.query_params.get("lang") or request.cookies.get("quartier_lang")
    if chosen in LANGUAGES:
        return chosen  # type: ignore[return-value]
    accept = request.headers.get("accept-language", "")
    for part in accept.split(","):
        code = part.split(";")[0].strip()[:2].lower()
        if code in LANGUAGES:
            return code
    return "fr"


def translator(lang: str):  # type: ignore[no-untyped-def]
    def t(key: str) -> str:
        entry = STRINGS.get(key)
        return entry[lang] if entry else key

    return t
