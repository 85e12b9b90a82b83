"""The contacts store and ``quartier notifier register``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from notifier.contacts import ContactStore, RegistrationError, read_registrations, validate
from notifier.database import notifier_engine
from quartier.cli import main
from quartier.settings import Settings

METER_A, METER_B = "012345678901", "109876543210"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def test_register_then_read_back_and_move_a_device(settings: Settings) -> None:
    store = ContactStore(notifier_engine(settings))
    store.register([validate({"meter": METER_A, "tokens": ["t1", "t2"], "email": "a@example.test", "language": "en"})])
    store.register([validate({"meter": METER_B, "tokens": ["t2"]})])  # the phone changed hands
    found = store.recipients([METER_A, METER_B, "999999999999"])
    assert found[METER_A].tokens == ("t1",) and found[METER_A].email == "a@example.test"
    assert found[METER_A].language == "en"
    assert found[METER_B].tokens == ("t2",) and found[METER_B].email is None and found[METER_B].language == "fr"
    assert "999999999999" not in found
    # Updating one field keeps the others.
    store.register([validate({"meter": METER_A, "language": "fr"})])
    assert store.recipients([METER_A])[METER_A].email == "a@example.test"
    assert store.remove_tokens(["t1", "never-known"]) == 1
    assert store.recipients([METER_A])[METER_A].tokens == ()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"meter": "12345"}, "meter"),
        ({"meter": METER_A, "email": "not an address"}, "email"),
        ({"meter": METER_A, "language": "de"}, "language"),
        ({"meter": METER_A, "tokens": ["has space"]}, "tokens.0"),
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


def test_cli_registers_from_a_file_and_refuses_a_bad_file_whole(tmp_path: Path, settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("QUARTIER_DATABASE_URL", settings.sqlite_url("notifier"))
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
    store = ContactStore(notifier_engine(settings))
    found = store.recipients([f"{i:012d}" for i in range(1, 31)] + [METER_A, METER_B])
    assert len(found) == 31
    assert METER_A not in found  # nothing from the bad file was registered
    assert found[METER_B].tokens == ("p1", "p2") and found["000000000003"].language == "en"
