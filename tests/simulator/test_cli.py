"""``quartier simulate`` as a user types it (no broker needed for these)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from simulator.cli import simulate


def test_describe_prints_the_fleet_as_json_and_produces_nothing() -> None:
    result = CliRunner().invoke(simulate, ["--describe", "--meters", "50", "--zones", "2", "--seed", "7", "--json"])
    assert result.exit_code == 0, result.output
    fleet = json.loads(result.output.strip().splitlines()[-1])
    assert len(fleet) == 50
    assert set(fleet[0]) >= {"meter", "zone", "subscribed_kva", "cutoff_kva", "tariff", "producer"}
    assert {home["zone"] for home in fleet} == {"zone-0001", "zone-0002"}
    again = CliRunner().invoke(simulate, ["--describe", "--meters", "50", "--zones", "2", "--seed", "7", "--json"])
    assert again.output == result.output


def test_bad_options_get_an_error_naming_the_option() -> None:
    runner = CliRunner()
    cases = {
        ("--meters", "0"): "--meters",
        ("--meters", "10", "--zones", "20"): "--zones",
        ("--meters", "10", "--malformed-fraction", "0.9"): "--malformed-fraction",
        ("--meters", "10", "--duration", "soon"): "--duration",
        ("--meters", "10", "--duration", "0"): "--duration",
        ("--meters", "10", "--speed", "-1"): "--speed",
        ("--meters", "10", "--start", "yesterday"): "--start",
    }
    for args, option in cases.items():
        result = runner.invoke(simulate, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert option in result.output, (args, result.output)


def test_codes_prints_each_meters_pairing_code_under_the_fleet_secret(monkeypatch) -> None:
    from quartier import pairing

    result = CliRunner().invoke(simulate, ["--codes", "--meters", "5", "--zones", "1", "--seed", "7", "--json"])
    assert result.exit_code == 0, result.output
    homes = json.loads(result.output.strip().splitlines()[-1])
    assert len(homes) == 5
    for home in homes:
        assert home["pairing_code"] == pairing.pairing_code(home["meter"], home["zone"])
    monkeypatch.setenv("QUARTIER_ACCOUNTS__PAIRING_SECRET", "a fleet secret")
    secret = json.loads(CliRunner().invoke(simulate, ["--codes", "--meters", "5", "--zones", "1", "--seed", "7", "--json"])
                        .output.strip().splitlines()[-1])
    assert [h["pairing_code"] for h in secret] == [pairing.pairing_code(h["meter"], h["zone"], "a fleet secret") for h in homes]
    assert secret != homes
