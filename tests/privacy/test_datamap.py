"""The data map classifies every place personal data can be; docs/privacy.md shows exactly the map."""

from __future__ import annotations

from collections import Counter
import importlib
import pkgutil
import sys
import tomllib
from pathlib import Path

import msgspec
from sqlmodel import SQLModel

from privacy import datamap
from quartier import events, sealing, topics

ROOT = Path(__file__).resolve().parents[2]


def our_modules() -> list[str]:
    """Every module of every package pyproject.toml ships (bench excepted: it holds no data)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    names = []
    for pattern in include:
        package = pattern.rstrip("*")
        if package == "bench":
            continue
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def test_every_record_type_is_classified() -> None:
    records = {
        value.__name__ for module in (events, sealing) for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct) and value.__module__ == module.__name__
        and value is not events.Record
    }
    assert records - datamap.classified("record") == set()
    assert len(records) >= 24


def test_every_table_of_every_package_is_classified() -> None:
    our_modules()
    tables = set(SQLModel.metadata.tables)
    assert {"notifier_user", "market_participant", "privacy_access_log"} <= tables
    assert tables - datamap.classified("table") == set()


def test_every_influxdb_measurement_is_classified() -> None:
    measurements: set[str] = set()
    for name in our_modules():
        for attribute, value in vars(sys.modules[name]).items():
            if "MEASUREMENT" in attribute:
                values = value.values() if isinstance(value, dict) else [value]
                measurements.update(v for v in values if isinstance(v, str))
    assert {"reading", "reading_10m", "reading_30m", "alert", "market_slot", "zone_reading_30m"} <= measurements
    assert measurements - datamap.classified("measurement") == set()


def test_every_topic_is_classified() -> None:
    assert {t.name for t in topics.ALL} - datamap.classified("topic") == set()


def test_docs_privacy_md_shows_the_map_as_the_code_has_it() -> None:
    document = datamap.DOC.read_text()
    assert datamap.render(document) == document, "docs/privacy.md is stale: run python -m privacy.datamap"
    for place in datamap.MAP:
        assert f"`{place.name}`" in document


def test_each_place_is_classified_once() -> None:
    # Two entries for one place would let the document and the export disagree about it.
    seen = Counter((place.kind, place.name) for place in datamap.MAP)
    assert [key for key, count in seen.items() if count > 1] == []
