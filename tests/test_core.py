"""The core package: settings precedence, event contracts, published schemas, the compose file."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from quartier import events, schemas, topics
from quartier.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def reading(**changes: object) -> events.MeterReading:
    values: dict[str, object] = dict(
        meter="012345678901", zone="rennes-01", time_ms=1_700_000_000_000, seq=1, drawn_va=1_200,
        withdrawn_wh=10_000, withdrawn_wh_by_register=(6_000, 4_000), tariff_register=2,
        subscribed_kva=6, cutoff_kva=6, voltage_v=231, current_a=5,
    )
    values.update(changes)
    return events.MeterReading(**values)  # type: ignore[arg-type]


def test_a_batch_round_trips_through_json() -> None:
    batch = events.ReadingBatch(shard=3, readings=[reading(), reading(seq=2, drawn_va=900)])
    decoded = events.Decoder(events.IngestMessage).decode(events.encode(batch))
    assert decoded == batch


def test_a_single_reading_is_a_valid_ingest_message() -> None:
    decoded = events.Decoder(events.IngestMessage).decode(events.encode(reading()))
    assert isinstance(decoded, events.MeterReading)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda raw: raw.replace(b'"drawn_va":1300', b'"drawn_va":-5'), "$.readings[1].drawn_va"),
        (lambda raw: raw.replace(b'"drawn_va":1300', b'"drawn_va":"lots"'), "$.readings[1].drawn_va"),
        (lambda raw: raw.replace(b'"meter":"012345678901"', b'"meter":"abc"', 1), "$.readings[0].meter"),
        (lambda raw: raw.replace(b'"seq":1,', b'', 1), "seq"),
        (lambda raw: raw.replace(b'"shard":3', b'"shard":3,"extra":true'), "extra"),
    ],
)
def test_a_malformed_message_is_rejected_naming_the_field(mutate, field) -> None:  # type: ignore[no-untyped-def]
    raw = events.encode(events.ReadingBatch(shard=3, readings=[reading(), reading(seq=2, drawn_va=1_300)]))
    with pytest.raises(events.ContractError, match=field.replace("[", r"\[").replace("$", r"\$")):
        events.Decoder(events.IngestMessage).decode(mutate(raw))


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("meter", "01234567890x", "^[0-9]{12}$"),
        ("meter", "０１２３４５６７８９０１", "^[0-9]{12}$"),  # digits, but not ASCII ones: not an ADSC
        ("zone", "rennes 01", "^[A-Za-z0-9_.-]+$"),
        ("zone", "rennes/01", "^[A-Za-z0-9_.-]+$"),
    ],
)
def test_a_reading_with_a_malformed_id_is_rejected_naming_the_field(field: str, value: str, pattern: str) -> None:
    # The reading's IDs are checked by MeterReading itself (not by msgspec's pattern): the reason
    # reads as msgspec's own, with the path into the batch or into the single reading.
    good = {"meter": "012345678901", "zone": "rennes-01"}[field]
    decode = events.Decoder(events.IngestMessage).decode
    batch = events.encode(events.ReadingBatch(shard=3, readings=[reading(), reading(seq=2)]))
    before, _, after = batch.rpartition(f'"{good}"'.encode())
    bad_second = before + json.dumps(value).encode() + after
    with pytest.raises(events.ContractError) as raised:
        decode(bad_second)
    assert str(raised.value) == f"Expected `str` matching regex '{pattern}' - at `$.readings[1].{field}`"
    with pytest.raises(events.ContractError) as raised:
        decode(events.encode(reading()).replace(f'"{good}"'.encode(), json.dumps(value).encode()))
    assert str(raised.value) == f"Expected `str` matching regex '{pattern}' - at `$.{field}`"


def test_truncated_json_is_rejected_as_malformed() -> None:
    raw = events.encode(reading())
    with pytest.raises(events.ContractError, match="malformed JSON"):
        events.Decoder(events.IngestMessage).decode(raw[:40])


def test_records_are_immutable() -> None:
    with pytest.raises(AttributeError):
        reading().drawn_va = 0  # type: ignore[misc]


def test_alert_ids_are_deterministic_per_episode() -> None:
    first = events.alert_id("012345678901", "power_above", 1_000)
    assert first == events.alert_id("012345678901", "power_above", 1_000)
    assert first != events.alert_id("012345678901", "power_above", 2_000)
    assert first != events.alert_id("012345678901", "power_below", 1_000)


def test_a_meter_always_maps_to_the_same_shard() -> None:
    shards = {events.shard_of(f"{i:012d}", 32) for i in range(2_000)}
    assert shards == set(range(32))
    # crc32 is specified, so any producer in any language computes the same shard:
    assert events.shard_of("012345678901", 32) == zlib.crc32(b"012345678901") % 32


def test_published_schemas_match_the_code() -> None:
    for name, text in schemas.schema_documents().items():
        path = schemas.SCHEMA_DIR / name
        assert path.exists(), f"{path} is missing: run python -m quartier.schemas"
        assert path.read_text() == text, f"{path} is stale: run python -m quartier.schemas"


def test_every_topic_has_a_schema_and_partitions() -> None:
    assert len({t.name for t in topics.ALL}) == len(topics.ALL)
    for topic in topics.ALL:
        assert topic.partitions >= 1
        assert json.loads((schemas.SCHEMA_DIR / f"{topic.name}.json").read_text())["title"] == topic.name


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text(
        json.dumps({"settings": {"kafka": {"bootstrap": "127.0.0.1:19092"}, "influx": {"url": "http://127.0.0.1:18086"}}})
    )
    config = tmp_path / "quartier.toml"
    config.write_text('[influx]\nurl = "http://tsdb.example:8086"\ndatabase = "from_file"\n')
    monkeypatch.setenv("QUARTIER_STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUARTIER_INFLUX__DATABASE", "from_env")

    settings = Settings()
    assert settings.kafka.bootstrap == "127.0.0.1:19092"  # the running stack's port
    assert settings.influx.url == "http://tsdb.example:8086"  # the file beats the stack record
    assert settings.influx.database == "from_env"  # the environment beats the file
    assert Settings(influx={"database": "explicit"}).influx.database == "explicit"


def test_topic_names_carry_the_prefix() -> None:
    settings = Settings(kafka={"topic_prefix": "t1."})
    assert settings.topic(topics.METER_READINGS.name) == "t1.meter.readings"


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor docker-compose is installed: run ./dev setup")


def test_the_compose_file_is_valid() -> None:
    result = subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert {"kafka", "influxdb", "postgres", "anvil", "smtp", "worker", "notifier", "api"} <= set(result.stdout.split())


def test_the_node_tools_installed_are_exactly_the_committed_lock() -> None:
    """./dev installs the Node tools from the lock file: every package installed is at the version the
    committed lock pins, and the pins are the toolchain's (solc 0.8.37 above all: the artifacts' compiler).

    Compared by versions, not bytes: npm releases differ in which other platforms' optional anvil
    binaries they write into a lock file, which changes nothing installed here.
    """
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    committed = json.loads(
        subprocess.run(["git", "show", "HEAD:package-lock.json"], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
    )["packages"]
    installed = json.loads((ROOT / "node_modules" / ".package-lock.json").read_text())["packages"]
    assert installed, "nothing installed under node_modules"
    moved = {name: (entry["version"], committed.get(name, {}).get("version"))
             for name, entry in installed.items() if entry["version"] != committed.get(name, {}).get("version")}
    assert moved == {}
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    assert pins["solc"] == "0.8.37"
    assert {name: installed[f"node_modules/{name}"]["version"] for name in pins} == pins
