"""A writer waits until every process serving accounts has applied its append (accounts/followers.py):
then the serving process's own state has it, with nothing to poll; a process that died does not hold it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from accounts import followers
from accounts.operations import AccountOperations
from accounts.service import AccountsService
from quartier.settings import Settings


async def test_once_every_follower_applied_an_append_the_serving_process_knows_it_and_a_dead_one_is_not_waited_for(
    broker: dict[str, Any], smtp: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(broker, smtp)
    serving = AccountsService(settings, follow_interval_s=1.0)  # an API process
    await serving.start()
    writer = AccountsService(settings, follow_interval_s=0)  # the command line, the erasure saga
    await writer.start()
    engine = writer.read_model.engine
    try:
        ops = AccountOperations(settings, writer)
        await ops.sign_up(email="new@example.test", name="New", password="a long enough password")
        account = writer.state.account_by_email("new@example.test").account  # type: ignore[union-attr]
        household = await ops.create_household(account, "Chez New")
        await followers.wait_applied(engine, writer.state.position)
        assert serving.state.accounts[account].household == household  # asked once, right after

        # A live follower behind the log holds the writer, and is named; one silent for STALE_MS does not.
        now = followers.wall_ms()
        followers.report(engine, "host:1:behind", 0, now)
        with pytest.raises(TimeoutError, match="host:1:behind"):
            await followers.wait_applied(engine, writer.state.position, timeout_s=0.3)
        followers.report(engine, "host:1:behind", 0, now - followers.STALE_MS - 1)
        await followers.wait_applied(engine, writer.state.position, timeout_s=0.3)
        assert list(followers.behind(engine, writer.state.position + 1, now)) == [serving.follower_id]
    finally:
        await writer.stop()
        await serving.stop()
    # A process that stops takes its row away: nothing is left to wait for.
    assert followers.behind(engine, 10**9, followers.wall_ms()) == {}
