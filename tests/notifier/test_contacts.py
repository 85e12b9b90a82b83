"""The contacts store and ``quartier notifier register``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from notifier.accounts_projection import ContactsProjection
from notifier.contacts import ContactStore, RegistrationError, read_registrations, validate
from notifier.database import notifier_engine
from quartier.cli import main
from quartier.settings import Settings
from tests.support import settings_env

METER_A, METER_B = "012345678901", "109876543210"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def test_register_then_read_back_and_move_a_device(settings: Settings) -> None:
    store = ContactStore(notifier_engine(settings))
    store.register([validate({"meter": METER_A, "tokens": ["t1", "t2"], "email": "a@example.test", "language": "en"})])
    store.register([validate({"meter": METER_B, "tokens": ["t2"]})])  # the phone changed hands
    found = store.recipients_by_meter([METER_A, METER_B, "999999999999"])
    [a], [b] = found[METER_A], found[METER_B]
    assert a.tokens == ("t1",) and a.email == "a@example.test" and a.language == "en" and a.user == METER_A
    assert b.tokens == ("t2",) and b.email is None and b.language == "fr"
    assert "999999999999" not in found and found[None] == []
    # Updating one field keeps the others.
    store.register([validate({"meter": METER_A, "language": "fr", "quiet_hours": "22:30-06:45"})])
    [a] = store.recipients_by_meter([METER_A])[METER_A]
    assert a.email == "a@example.test" and str(a.quiet_hours) == "22:30-06:45"
    assert store.quiet_periods([METER_A, METER_B]).keys() == {METER_A}
    assert store.remove_tokens(["t1", "never-known"]) == 1
    assert store.recipients([METER_A])[METER_A].tokens == ()


def test_a_user_owns_several_meters_and_operators_get_operator_alerts(settings: Settings) -> None:
    store = ContactStore(notifier_engine(settings))
    store.register([
        validate({"meter": METER_A, "user": "landlord", "email": "l@example.test", "time_zone": "America/Montreal"}),
        validate({"meter": METER_B, "user": "landlord", "tokens": ["l-phone"], "channels": ["push"]}),
        validate({"user": "ops", "operator": True, "email": "ops@example.test", "muted_kinds": ["disconnected"]}),
    ])
    found = store.recipients_by_meter([METER_A, METER_B, None])
    assert found[METER_A] == found[METER_B] and found[METER_A][0].user == "landlord"
    assert found[METER_A][0].tokens == ("l-phone",) and found[METER_A][0].channels == {"push"}
    assert found[METER_A][0].time_zone.key == "America/Montreal"
    [ops] = found[None]
    assert ops.user == "ops" and ops.muted_kinds == {"disconnected"}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"meter": "12345"}, "meter"),
        ({"meter": METER_A, "email": "not an address"}, "email"),
        ({"meter": METER_A, "language": "de"}, "language"),
        ({"meter": METER_A, "tokens": ["has space"]}, "tokens.0"),
        ({"meter": METER_A, "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"meter": METER_A, "quiet_hours": "late"}, "quiet_hours"),
        ({"meter": METER_A, "channels": ["pigeon"]}, "channels.0"),
        ({"meter": METER_A, "muted_kinds": ["solar_flare"]}, "muted_kinds.0"),
        ({"meter": METER_A, "email": "josé@example.test"}, "email"),
        ({"tokens": ["t"]}, "meter"),
    ],
)
def test_bad_registration_names_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(RegistrationError, match=rf"^{field}: "):
        validate(values)


def test_bulk_file_merges_rows_per_meter(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "meter,token,email,language\n"
        f"{METER_A},phone-1,a@example.test,fr\n"
        f"{METER_A},tablet-1,,\n"
        f"{METER_B},,b@example.test,en\n"
    )
    registrations = {r.meter: r for r in read_registrations(path)}
    assert registrations[METER_A].tokens == ("phone-1", "tablet-1")
    assert registrations[METER_B].tokens == () and registrations[METER_B].language == "en"


def test_bulk_file_takes_optional_preference_columns(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "meter,token,email,language,user,time_zone,quiet_hours,channels\n"
        f"{METER_A},phone-1,a@example.test,fr,flat-3,Europe/Paris,22:00-07:00,\"push,email\"\n"
        f"{METER_B},,b@example.test,en,,,,email\n"
    )
    registrations = {r.meter: r for r in read_registrations(path)}
    assert registrations[METER_A].user_id == "flat-3" and registrations[METER_A].quiet_hours == "22:00-07:00"
    assert registrations[METER_A].channels == ("push", "email") and registrations[METER_B].channels == ("email",)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"meter,token,email,language,quiet_hours\n{METER_A},p,,fr,soon\n")
    with pytest.raises(RegistrationError, match=rf"^{bad}:2: quiet_hours: "):
        read_registrations(bad)


def test_cli_registers_from_a_file_and_refuses_a_bad_file_whole(
    tmp_path: Path, broker: dict[str, Any], make_settings: Callable[..., Settings], monkeypatch
) -> None:
    """The command appends accounts events; the notifier's contacts are their projection."""
    settings = make_settings(broker)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    good = tmp_path / "good.csv"
    good.write_text("meter,token,email,language\n" + "".join(
        f"{i:012d},device-{i},home-{i}@example.test,{'en' if i % 2 else 'fr'}\n" for i in range(1, 31)
    ))
    bad = tmp_path / "bad.csv"
    bad.write_text(f"meter,token,email,language\n{METER_A},ok-device,,\n{METER_B},x,oops,fr\n")
    runner = CliRunner()

    result = runner.invoke(main, ["notifier", "register", "--from-file", str(good)])
    assert result.exit_code == 0, result.output
    assert "registered 30 meter(s), 30 device(s)" in result.output
    result = runner.invoke(main, ["notifier", "register", "--from-file", str(bad)])
    assert result.exit_code != 0
    assert f"{bad}:3: email: " in result.output

    result = runner.invoke(main, ["notifier", "register", "--meter", METER_B, "--token", "p1", "--token", "p2",
                                  "--email", "b@example.test", "--language", "en"])
    assert result.exit_code == 0, result.output
    engine = notifier_engine(settings)
    asyncio.run(ContactsProjection(settings, engine).rebuild())
    store = ContactStore(engine)
    found = store.recipients_by_meter([f"{i:012d}" for i in range(1, 31)] + [METER_A, METER_B])
    assert len(found) == 31 + 1  # and the operators' entry
    assert METER_A not in found  # nothing from the bad file was registered
    assert found[METER_B][0].tokens == ("p1", "p2") and found["000000000003"][0].language == "en"

    result = runner.invoke(main, ["notifier", "register", "--meter", METER_B, "--quiet-hours", "25:00-07:00"])
    assert result.exit_code != 0 and "quiet_hours: " in result.output
