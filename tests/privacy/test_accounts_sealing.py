"""The accounts events' personal fields: sealed as version 2, version 1 still decodes, erased ones fold."""

from __future__ import annotations

from pathlib import Path

from accounts.log import checked
from accounts.sealed import ERASED_NAME, Sealing
from accounts.state import AccountsState
from quartier import events as ev
from quartier.sealing import KeyStore, Sealer

ACCOUNT, HOUSEHOLD = "acct_00000000000000a1", "hh_00000000000000b1"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def created(email: str = "luna.a@orange.com") -> ev.AccountCreated:
    return ev.AccountCreated(account=ACCOUNT, email=email, name="Luna Adalyn", password_hash=HASH, at_ms=1)


def test_sealed_events_are_version_2_and_fold_as_the_clear_ones(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.db", bytes(32))
    sealing = Sealing(Sealer(keys))
    events = [
        created(),
        ev.HouseholdCreated(household=HOUSEHOLD, owner=ACCOUNT, name="Chez Adalyn", at_ms=2),
    ]
    data = [checked(sealing.seal(e)) for e in events]
    assert all(b"Adalyn" not in d and b"luna" not in d for d in data)
    decoded = [ev.decoder(ev.AccountsEvent).decode(d) for d in data]
    assert [e.v for e in decoded] == [2, 2]  # type: ignore[attr-defined]
    assert [sealing.open(e) for e in decoded] == [msgspec_replace(e, v=2) for e in events]

    # A version 1 record, written before sealing, decodes and folds as it always did.
    old = ev.decoder(ev.AccountsEvent).decode(ev.encode(created()))
    assert old.v == 1 and sealing.open(old) == old  # type: ignore[attr-defined]

    # Once the keys are erased, the same log folds with placeholders: nothing personal, invariants kept.
    keys.forget([ACCOUNT, HOUSEHOLD], erased_ms=3)
    state = AccountsState()
    for offset, event in enumerate(decoded):
        state.apply(sealing.open(event), offset)
    account = state.accounts[ACCOUNT]
    assert (account.email, account.name) == (f"{ACCOUNT}@erased.invalid", ERASED_NAME)
    assert state.households[HOUSEHOLD].name == ERASED_NAME


def msgspec_replace(event: object, **changes: object) -> object:
    import msgspec

    return msgspec.structs.replace(event, **changes)  # type: ignore[type-var]
