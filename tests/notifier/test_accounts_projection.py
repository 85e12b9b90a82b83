"""The notifier's contacts as a projection of accounts.events, over the real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from accounts.commands import device_id
from accounts.operations import AccountOperations
from accounts.service import AccountsService
from notifier.accounts_projection import ContactsProjection
from notifier.contacts import ContactStore, DeviceToken, MeterOwner, User
from notifier.database import notifier_engine
from quartier import pairing
from quartier.settings import Settings
from tests.accounts.test_service import confirmation_token, wait_for

METER = "041848542645"
PASSWORD = "a long enough password"


def contact_rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    with Session(engine) as session:
        return {
            "users": sorted(tuple(u.model_dump().values()) for u in session.exec(select(User))),
            "devices": sorted((d.token, d.user_id) for d in session.exec(select(DeviceToken))),
            "owners": sorted((o.meter, o.user_id) for o in session.exec(select(MeterOwner))),
        }


async def test_members_devices_and_preferences_become_contacts_and_follow_the_log(
    broker: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(broker, smtp)
    service = AccountsService(settings, follow_interval_s=0.2)
    await service.start()
    ops = AccountOperations(settings, service)
    engine = notifier_engine(settings)
    projection = ContactsProjection(settings, engine, follow_interval_s=0.2)
    try:
        await ops.sign_up(email="owner@projection.test", name="Owner", password=PASSWORD, language="en")
        await ops.sign_up(email="member@projection.test", name="Member", password=PASSWORD)
        owner = service.state.account_by_email("owner@projection.test").account  # type: ignore[union-attr]
        member = service.state.account_by_email("member@projection.test").account  # type: ignore[union-attr]
        await ops.confirm(confirmation_token(settings, "owner@projection.test"))
        await ops.create_household(owner, "Chez nous")
        await ops.pair(owner, meter=METER, zone="zone-0001", code=pairing.pairing_code(METER, "zone-0001"))
        await ops.join(member, (await ops.invite(owner)).code)
        await ops.add_device(owner, "owner-phone")
        await ops.set_notifications(owner, alert_email="owner.alerts@projection.test", channels=("push", "email"),
                                    quiet_hours=None, time_zone="Europe/Paris", language="en", muted_kinds=())
        await ops.set_notifications(member, alert_email=None, channels=("push",), quiet_hours="22:00-07:00",
                                    time_zone="Europe/Paris", language="fr", muted_kinds=("power_below",))

        await projection.start()
        store = ContactStore(engine)
        [first, second] = store.recipients_by_meter([METER])[METER]
        by_user = {r.user: r for r in (first, second)}
        assert by_user[owner].email == "owner.alerts@projection.test" and by_user[owner].tokens == ("owner-phone",)
        assert by_user[owner].language == "en" and by_user[owner].channels == {"push", "email"}
        assert by_user[member].email is None and by_user[member].tokens == ()
        assert str(by_user[member].quiet_hours) == "22:00-07:00" and by_user[member].muted_kinds == {"power_below"}

        # Followed as it happens: the member's phone arrives.
        await ops.add_device(member, "member-phone")
        await wait_for(lambda: {r.user: r.tokens for r in store.recipients_by_meter([METER])[METER]}[member] == ("member-phone",))

        # FCM says the owner's phone is gone: accounts hears it on its log, and the contact goes.
        await projection.unregistered(["owner-phone"])
        await wait_for(lambda: device_id("owner-phone") not in service.state.devices)
        await wait_for(lambda: {r.user: r.tokens for r in store.recipients_by_meter([METER])[METER]}[owner] == ())

        # Leaving the household takes the member off the meter.
        await ops.leave(member)
        await wait_for(lambda: [r.user for r in store.recipients_by_meter([METER])[METER]] == [owner])
        followed = contact_rows(engine)
    finally:
        await projection.stop()
        await service.stop()

    # Rebuilt from the log alone, the contacts are the same rows.
    rebuilt_engine = notifier_engine(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'rebuilt.db'}"}))
    await ContactsProjection(settings, rebuilt_engine).rebuild()
    assert contact_rows(rebuilt_engine) == followed
