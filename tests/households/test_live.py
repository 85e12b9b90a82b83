"""The live path over the real broker: one feed, readings fanned out to each meter's viewers."""

from __future__ import annotations

import asyncio
from typing import Any

from households.live import LiveFeed, LiveHub, LiveReading, decode_live, figures
from quartier import events, topics
from quartier.events import MeterReading, ReadingBatch, shard_of
from quartier.kafka import ensure_topics
from tests.households.meters import local_ms
from tests.streams.worker_support import send


def reading(meter: str, t_ms: int, va: int, register: int = 1) -> MeterReading:
    return MeterReading(
        meter=meter, zone="rennes-01", time_ms=t_ms, seq=t_ms // 1000 % 100_000, drawn_va=va, withdrawn_wh=5_000,
        withdrawn_wh_by_register=(2_000, 3_000), tariff_register=register, subscribed_kva=9, cutoff_kva=9,
    )


def test_the_live_figures_of_a_reading_at_peak_price() -> None:
    # 11:00 on 10 February 2025, peak hours: 4,500 VA at 0.2146 EUR/kWh = 0.9657 EUR/h; 9 kVA cut-off: 50 %.
    r = decode_live(events.encode(reading("200000000001", local_ms(2025, 2, 10, 11), 4500, register=2)))[0]
    live = figures(r, "peak_offpeak")
    assert (live.power_va, live.eur_per_hour, live.fuse_headroom_pct, live.register_name) == (4500, 0.9657, 50.0, "peak")


def test_a_batch_decodes_to_its_readings_and_garbage_to_none() -> None:
    batch = ReadingBatch(shard=3, readings=[reading("200000000001", 1000, 10), reading("200000000002", 1000, 20)])
    assert [r.drawn_va for r in decode_live(events.encode(batch))] == [10, 20]
    assert decode_live(b'{"type": "batch", "readings": [{"meter": 1}]}') == []


def test_the_viewers_of_one_reading_share_one_encoding_per_tariff() -> None:
    # Forty viewers of one home: the reading is encoded once per tariff, and again only when a newer one comes.
    hub = LiveHub()
    meter = "200000000001"
    first = decode_live(events.encode(reading(meter, local_ms(2025, 2, 10, 11), 4500, register=2)))[0]
    hub.publish([first])
    encoded: list[tuple[int, str]] = []

    def encode(option: str):  # type: ignore[no-untyped-def]
        def run(r: LiveReading) -> str:
            encoded.append((r.time_ms, option))
            return f"{option}:{figures(r, option).eur_per_hour}"
        return run

    answers = [hub.encoded(meter, first, option, encode(option)) for option in ["peak_offpeak"] * 40 + ["base"] * 2]
    # 4.5 kW x 0.2146 EUR/kWh at peak; the base option has no register 2 to price it with.
    assert set(answers) == {"peak_offpeak:0.9657", "base:None"}
    assert encoded == [(first.time_ms, "peak_offpeak"), (first.time_ms, "base")]
    newer = decode_live(events.encode(reading(meter, first.time_ms + 1000, 1000, register=2)))[0]
    hub.publish([newer])
    assert hub.encoded(meter, newer, "peak_offpeak", encode("peak_offpeak")) == "peak_offpeak:0.2146"
    # A viewer still holding the older reading gets it encoded anew, never the newer one's bytes.
    assert hub.encoded(meter, first, "peak_offpeak", encode("peak_offpeak")) == "peak_offpeak:0.9657"
    assert len(encoded) == 4


async def test_a_viewer_gets_each_newer_reading_and_a_reconnecting_one_the_latest_at_once(
    broker: dict[str, Any], make_settings: Any
) -> None:
    settings = make_settings(broker)
    await ensure_topics(settings)
    hub = LiveHub()
    feed = LiveFeed(settings, hub)
    await feed.start()
    try:
        await asyncio.wait_for(feed.ready.wait(), 10)
        meter, other = "200000000011", "200000000012"
        seen: list[tuple[int, int]] = []

        async def view() -> None:
            async for r in hub.follow(meter):
                seen.append((r.time_ms, r.drawn_va))
                if len(seen) == 3:
                    return

        viewer = asyncio.create_task(view())
        shards = settings.kafka.reading_shards
        for i, va in enumerate((1000, 2000, 3000)):
            batch = ReadingBatch(
                shard=shard_of(meter, shards), readings=[reading(meter, 10_000 + i * 1000, va)]
            )
            noise = ReadingBatch(shard=shard_of(other, shards), readings=[reading(other, 10_000 + i * 1000, 7)])
            await send(settings, topics.METER_READINGS.name, [(b"k", events.encode(batch)), (b"n", events.encode(noise))])
            await asyncio.sleep(0.3)
        await asyncio.wait_for(viewer, 15)
        assert seen == [(10_000, 1000), (11_000, 2000), (12_000, 3000)]
        # Reconnecting with Last-Event-ID 11000: the latest (12000) comes at once, with no new reading.
        back = hub.follow(meter, last_seen_ms=11_000)
        first: LiveReading = await asyncio.wait_for(back.__anext__(), 1)
        assert (first.time_ms, first.drawn_va) == (12_000, 3000)
        await back.aclose()
        assert hub.latest(other).drawn_va == 7  # type: ignore[union-attr]
        assert hub.viewers() == 0
    finally:
        await feed.stop()
