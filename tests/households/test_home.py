"""Power advice, alert history with acknowledgements, the neighbours' comparison and the CSV export,
over the scripted homes the real worker wrote to InfluxDB (tests/households/scenarios.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import pytest

from households import export
from households.alert_history import AlertActions, NotFound, acknowledge, find, history, snooze
from households.comparison import compare, comparison, daily_kwh
from households.power import subscribed_power_advice
from quartier import events, topics
from quartier.events import AlertAcknowledged, AlertSnoozed
from quartier.kafka import read_all
from tests.households.meters import local_ms
from tests.households.scenarios import METERS, NEIGHBOURS, Told
from tests.streams.worker_support import send

ALICE, BOB = "acct_00000000000a11ce", "acct_00000000000000b0"


async def test_a_9_kva_home_peaking_at_4_2_kw_is_told_6_kva_would_save_47_eur_a_year(told: Told) -> None:
    home = METERS["evening_peak"].home
    advice = subscribed_power_advice(told.settings, home, at_ms=local_ms(2025, 1, 15))
    assert (advice.peak_va, advice.verdict, advice.recommended_kva) == (4200, "too_high", 6)
    # (19.39 - 15.47) EUR a month x 12, the February 2025 base grid
    assert advice.yearly_eur_at_stake == 47.04
    too_small = subscribed_power_advice(told.settings, replace(home, subscribed_kva=3), at_ms=local_ms(2025, 1, 15))
    assert (too_small.verdict, too_small.recommended_kva) == ("too_low", 6)


async def test_the_power_alert_is_one_episode_in_the_history_and_members_acknowledge_and_snooze_it(told: Told) -> None:
    home = METERS["evening_peak"].home
    raised_ms = local_ms(2025, 1, 14, 18)

    async def listed():  # type: ignore[no-untyped-def]
        found = [e for e in history(told.settings, home) if e.kind == "power_above"]
        return found if found and found[0].resolved_ms else None

    (episode,) = await told.worker.until(listed, 60, "the power episode in InfluxDB")
    assert (episode.raised_ms, episode.value, episode.threshold) == (raised_ms, 4200, 3000)
    assert episode.resolved_ms == local_ms(2025, 1, 14, 18, 30)
    assert episode.id == events.alert_id(home.meter, "power_above", raised_ms)
    assert history(told.settings, home, before_ms=raised_ms) == []  # the next page is empty
    assert find(told.settings, home, episode.id) == episode
    with pytest.raises(NotFound, match="alert_id"):
        find(told.settings, METERS["base_day"].home, episode.id)  # another home's episode is not found

    actions = AlertActions()
    acked = acknowledge(actions, home, episode, ALICE, at_ms=raised_ms + 60_000)
    snoozed = snooze(actions, home, episode, BOB, at_ms=raised_ms + 120_000, minutes=60)
    with pytest.raises(ValueError, match="minutes"):
        snooze(actions, home, episode, BOB, at_ms=raised_ms, minutes=1)
    topic = topics.HOUSEHOLDS_ALERT_ACTIONS.name
    await send(told.settings, topic, [(home.meter.encode(), events.encode(e)) for e in (*acked, *snoozed)])
    log = await read_all(told.settings, told.settings.topic(topic), events.decoder(events.AlertAction).decode)
    log = [e for e in log if e.meter == home.meter]  # type: ignore[attr-defined]  # (other tests act on other homes)
    assert [type(e) for e in log] == [AlertAcknowledged, AlertSnoozed]
    folded = AlertActions()
    for event in log:
        folded.apply(event)  # type: ignore[arg-type]
    state = folded.of(episode.id)
    assert (state.acknowledged_by, state.snoozed_by, state.snoozed_until_ms) == (
        ALICE, BOB, raised_ms + 120_000 + 3_600_000
    )
    assert acknowledge(folded, home, episode, BOB, at_ms=raised_ms) == []  # already acknowledged


AT = local_ms(2025, 1, 9)



async def test_the_comparison_needs_ten_similar_homes(told: Told) -> None:
    home = NEIGHBOURS[0]
    nine = comparison(told.settings, home, NEIGHBOURS[:9], at_ms=AT)
    assert not nine.available and "fewer than 10 similar homes" in (nine.reason or "")
    assert nine.typical_kwh_per_day is None
    # a home of another band does not count as similar
    other_band = [*NEIGHBOURS[:9], replace(NEIGHBOURS[9], subscribed_kva=12)]
    assert not comparison(told.settings, home, other_band, at_ms=AT).available
    ten = comparison(told.settings, home, NEIGHBOURS, at_ms=AT)
    assert ten.available and ten.typical_kwh_per_day == (8.0, 16.0)
    assert (ten.own_kwh_per_day, ten.position) == (5.8, "below")  # 240 W: 5.76 kWh a day


async def test_nine_known_figures_do_not_give_away_the_tenth_to_within_20_percent(told: Told) -> None:
    figures = daily_kwh(told.settings, [h.meter for h in NEIGHBOURS], at_ms=AT)
    secret = NEIGHBOURS[9]
    known = {h.meter: figures[h.meter] for h in NEIGHBOURS[:9]}
    assert figures[secret.meter] == pytest.approx(7.92)  # 330 W all day
    assert sorted(round(v, 2) for v in known.values()) == [5.76, 7.2, 8.64, 10.08, 11.52, 12.96, 14.4, 15.84, 17.28]

    def answers(tenth: float) -> list[object]:
        """Every answer the API gives the nine other households, were the tenth's figure ``tenth``."""
        group = [*known.values(), tenth]
        return [compare(h, known[h.meter], group) for h in NEIGHBOURS[:9]]

    seen = [comparison(told.settings, h, NEIGHBOURS, at_ms=AT) for h in NEIGHBOURS[:9]]
    assert seen == answers(figures[secret.meter])
    # Every tenth figure the attacker cannot tell from the true one:
    grid = [x / 100 for x in range(10, 10_000)]
    consistent = [x for x in grid if answers(x) == seen]
    assert min(consistent) <= 7.92 <= max(consistent)
    # An estimate e within 20% of every consistent x needs max <= 1.5 x min (0.8 max <= e <= 1.2 min).
    assert max(consistent) / min(consistent) > 1.5


async def test_the_csv_export_has_units_in_the_header_and_one_row_per_point(told: Told, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = METERS["base_day"].home
    start, end = local_ms(2025, 1, 14), local_ms(2025, 1, 14, 2)
    monkeypatch.setattr(export, "PAGE_ROWS", 5)  # several InfluxDB pages, joined without a gap or a repeat
    text = "".join([chunk async for chunk in export.stream(told.settings, home, "raw", start, end)])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        "time_utc", "power_va", "injected_power_va", "withdrawn_index_wh", "injected_index_wh", "voltage_v",
        "current_a", "tariff_register",
    ]
    assert len(rows) == 1 + 12  # every 10 minutes for two hours
    # from 22:00 the evening before at 1,200 W: 12 steps of 200 Wh by midnight
    assert rows[1][:4] == ["2025-01-13T23:00:00.000Z", "1200", "0", str(1_000_000 + 12 * 200)]
    assert [int(r[3]) for r in rows[1:]] == [1_002_400 + 200 * i for i in range(12)]
    hourly = list(csv.reader(io.StringIO("".join([c async for c in export.stream(told.settings, home, "1h", start, end)]))))
    assert hourly[0][:3] == ["time_utc", "power_mean_va", "power_max_va"] and len(hourly) == 1 + 2
    with pytest.raises(ValueError, match="resolution"):
        export.validate("5s", start, end)
    with pytest.raises(ValueError, match="to: must be after from"):
        export.validate("raw", end, start)
