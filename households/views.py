"""What the household operations answer and take (pydantic models: validated and documented once)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.bounds import Query


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LiveQuery(Query):
    for_s: float | None = Field(None, gt=0, le=86_400, description="close the stream after this many seconds")


class ConsumptionQuery(Query):
    range: Literal["24h", "7d", "30d", "12mo"] = "24h"
    unit: Literal["kwh", "eur"] = "kwh"


class ConsumptionPoint(BaseModel):
    start_ms: int = Field(description="the bucket's start, epoch ms UTC")
    value: float | None = Field(description="kWh, or EUR (None: readings without per-tariff registers)")
    power_mean_va: float | None = None


class ConsumptionView(BaseModel):
    range: str
    unit: Literal["kwh", "eur"]
    interval_s: int
    source: str = Field(description="raw (1 Hz readings) or rollup (10-minute points)")
    total: float | None
    points: list[ConsumptionPoint]


class DayView(BaseModel):
    day: date
    energy_kwh: float
    eur: float | None
    complete: bool


class BillView(BaseModel):
    period_start: date
    period_end: date
    days_elapsed: int
    days_in_period: int
    energy_kwh: float
    energy_eur: float
    subscription_eur: float
    total_eur: float
    projected_total_eur: float
    projected_energy_eur: float
    projected_subscription_eur: float
    projection_method: str
    days: list[DayView]


class SummaryView(BaseModel):
    tariff: str
    subscribed_kva: int
    register_now: int
    register_name_now: str
    price_eur_per_kwh_now: float
    tempo_today: str | None
    tempo_tomorrow: str | None
    today_kwh: float | None
    today_eur: float | None
    month_eur: float | None


class PowerView(BaseModel):
    fuse_headroom_pct: float | None = Field(description="from the latest live reading; None before one arrived")
    power_va: int | None
    subscribed_kva: int
    peak_va_12_months: int | None
    verdict: Literal["too_low", "too_high", "right", "unknown"]
    recommended_kva: int | None
    yearly_eur_at_stake: float


class HistoryQuery(Query):
    before_ms: int | None = Field(None, ge=0, description="the previous page's last raised_ms")
    limit: int = Field(20, ge=1, le=100)


class EpisodeView(BaseModel):
    id: str
    kind: str
    raised_ms: int
    resolved_ms: int | None
    value: float
    threshold: float
    acknowledged_by: str | None
    acknowledged_ms: int | None
    snoozed_until_ms: int | None


class HistoryView(BaseModel):
    items: list[EpisodeView]
    next_before_ms: int | None


class AlertPath(Query):
    alert_id: Annotated[str, Field(pattern=r"^[0-9a-f]{24}$")]


class SnoozeBody(Strict):
    minutes: int = Field(ge=5, le=7 * 24 * 60, description="how long no repeat of this episode is sent")


class ComparisonView(BaseModel):
    available: bool
    reason: str | None
    band: str
    heating: str
    own_kwh_per_day: float | None
    typical_kwh_per_day_low: float | None
    typical_kwh_per_day_high: float | None
    position: Literal["below", "within", "above"] | None


class SolarView(BaseModel):
    exported_kwh_30_days: float
    market_sold_kwh: float
    market_earned_eur: float
    market_settled_eur: float
    production_note: str


class ExportQuery(Query):
    from_: date = Field(alias="from", description="first local day (YYYY-MM-DD)")
    to: date = Field(description="last local day, included")
    resolution: Literal["raw", "10m", "1h", "1d"] = "1h"


class LiveEventView(BaseModel):
    """The ``data`` of one ``reading`` event of the live stream (``text/event-stream``)."""

    power_va: int
    eur_per_hour: float | None
    fuse_headroom_pct: float
    meter_time_ms: int
    register_name: str | None = Field(description="the tariff register counting now (peak, off-peak, red peak, ...)")
    injected_va: int
    produced_ms: int = Field(description="when the reading entered the broker (its Kafka timestamp): how fresh it is")


class ExportRowView(BaseModel):
    """One row of the CSV (``text/csv``; at the ``raw`` resolution; the header names each column's unit)."""

    time_utc: str
    power_va: int
    injected_power_va: int
    withdrawn_index_wh: int
    injected_index_wh: int
    voltage_v: int
    current_a: int
    tariff_register: int
