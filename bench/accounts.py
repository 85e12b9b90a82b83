"""How fast the accounts log folds, and the notifier's contacts are rewritten from it, at fleet size.

``python -m bench.accounts [--households 48000] [--json]``

Each household is the six events a household that paired its meter and registered a phone and an
alert email leaves on ``accounts.events`` (account created, household created, member joined, meter
paired, device added, notifications set), encoded as on the log. Measured in one process, no broker:

- ``fold_events_per_s``: decode and fold every event (:class:`accounts.state.AccountsState`), what
  the accounts service and the notifier do at every start;
- ``decode_events_per_s``, the **baseline** of the same run: decoding alone (msgspec), the floor
  the fold cannot beat; ``ratio`` is fold over decode;
- ``contacts_rewrite_s``: the notifier's contact rows of every household written again
  (:func:`notifier.accounts_projection.write_contacts`) into a fresh SQLite file;
- ``read_model_rebuild_s``: the accounts read models written again (``quartier accounts rebuild``'s
  write, :meth:`accounts.readmodel.ReadModel.rebuild`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from sqlmodel import SQLModel, create_engine

from accounts.passwords import unusable_hash
from bench import lifetime
from accounts.readmodel import ReadModel
from accounts.state import AccountsState
from notifier import contacts
from notifier.accounts_projection import write_contacts
from quartier import events as ev


def household_events(n: int) -> list[bytes]:
    password_hash = unusable_hash()
    out = []
    for i in range(n):
        account, household, meter = f"acct_{i:016x}", f"hh_{i:016x}", f"{i:012d}"
        out += [ev.encode(e) for e in (
            ev.AccountCreated(account=account, email=f"home{i}@example.test", name=f"Home {i}", password_hash=password_hash, at_ms=1),
            ev.HouseholdCreated(household=household, owner=account, name=f"Home {i}", at_ms=2),
            ev.MemberJoined(household=household, account=account, role="owner", at_ms=3),
            ev.MeterPaired(household=household, meter=meter, zone=f"zone-{i % 240:04d}", by=account, at_ms=4),
            ev.DeviceAdded(household=household, account=account, device=f"dev_{i:016x}", device_token=f"token-{i}", at_ms=5),
            ev.NotificationsSet(household=household, account=account, alert_email=f"alerts{i}@example.test", at_ms=6),
        )]
    return out


def run(households: int) -> dict[str, float]:
    data = household_events(households)
    decoder = ev.decoder(ev.AccountsEvent)

    started = time.perf_counter()
    for item in data:
        decoder.decode(item)
    decode_s = time.perf_counter() - started

    started = time.perf_counter()
    state = AccountsState()
    for offset, item in enumerate(data):
        state.apply(decoder.decode(item), offset)
    fold_s = time.perf_counter() - started
    assert len(state.pairings) == households and not state.skipped

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/notifier.db")
        SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in contacts.TABLES])  # type: ignore[attr-defined]
        started = time.perf_counter()
        write_contacts(engine, state)
        contacts_s = time.perf_counter() - started
        engine.dispose()
        read_model = ReadModel(f"sqlite:///{tmp}/accounts.db")
        started = time.perf_counter()
        read_model.rebuild(state)
        rebuild_s = time.perf_counter() - started
        read_model.close()
    fold_rate, decode_rate = len(data) / fold_s, len(data) / decode_s
    return {
        "households": households,
        "events": len(data),
        "fold_events_per_s": round(fold_rate),
        "decode_events_per_s": round(decode_rate),
        "ratio": round(fold_rate / decode_rate, 3),
        "fold_s": round(fold_s, 2),
        "contacts_rewrite_s": round(contacts_s, 2),
        "read_model_rebuild_s": round(rebuild_s, 2),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=48_000)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    figures = run(args.households)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<22} {value}")


if __name__ == "__main__":
    lifetime.run(main)
