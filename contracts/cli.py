"""``quartier chain``: The settlement contracts on the chain."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from quartier.settings import Settings


@click.group()
def chain() -> None:
    """The settlement contracts on the chain."""


@chain.command("deploy")
@click.option("--gate-closure", "gate_closure_s", default=300, show_default=True, help="Seconds before a slot when trading on it closes.")
@click.option("--settlement-timeout", "settlement_timeout_s", default=7 * 24 * 3600, show_default=True, help="Seconds after a slot before consumers may reclaim unsettled escrow.")
@click.option("--mint-cents", default=1_000_000, show_default=True, help="On a dev chain, cents minted to each trading dev account (2-9) at a new deployment.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def deploy(gate_closure_s: int, settlement_timeout_s: int, mint_cents: int, as_json: bool) -> None:
    """Deploy the euro token and the market, or reuse the recorded deployment when it still fits."""
    from contracts.connection import ChainConfigError, admin_sender, connect, oracle_sender
    from contracts.deployment import ensure_deployed, record_path
    from contracts.devchain import DEV_ACCOUNTS, DEV_CHAIN_IDS, ORACLE, dev_account
    from contracts.market import Market

    if min(gate_closure_s, settlement_timeout_s, mint_cents) < 0:
        raise click.BadParameter("--gate-closure, --settlement-timeout and --mint-cents must be >= 0")
    settings = Settings()
    try:
        w3 = connect(settings)
        admin, oracle = admin_sender(w3, settings), oracle_sender(w3, settings)
    except ChainConfigError as exc:
        raise click.ClickException(str(exc)) from None
    record, created = ensure_deployed(
        w3, admin, oracle.address, settings.state_dir,
        gate_closure_s=gate_closure_s, settlement_timeout_s=settlement_timeout_s,
    )  # fmt: skip
    minted: dict[str, int] = {}
    if created and mint_cents and w3.eth.chain_id in DEV_CHAIN_IDS:
        market = Market(w3, record)
        for index in range(ORACLE + 1, DEV_ACCOUNTS):
            account = dev_account(index).address
            market.mint(admin, account, mint_cents)
            minted[account] = mint_cents
    summary = {
        "created": created,
        "chain_id": record.chain_id,
        "token": record.token,
        "market": record.market,
        "block": record.block,
        "oracle": record.oracle,
        "record": str(record_path(settings.state_dir, record.chain_id)),
        "minted_cents": minted,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{'deployed' if created else 'already deployed'} on chain {record.chain_id} (block {record.block})")
    click.echo(f"token   {record.token}\nmarket  {record.market}\noracle  {record.oracle}")
    if minted:
        click.echo(f"minted  {mint_cents / 100:.2f} EUR to each of {len(minted)} dev accounts")
    click.echo(f"record  {summary['record']}")


@chain.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(as_json: bool) -> None:
    """Addresses, token supply, escrow held, credits owed and the last settled slot."""
    from contracts.connection import ChainConfigError, connect, market
    from contracts.deployment import DeploymentError

    settings = Settings()
    try:
        w3 = connect(settings)
        bound = market(w3, settings)
    except (ChainConfigError, DeploymentError) as exc:
        raise click.ClickException(str(exc)) from None
    totals = bound.totals()
    last = totals.last_settled_slot_start
    summary = {
        "chain_id": bound.record.chain_id,
        "block": w3.eth.block_number,
        "token": bound.record.token,
        "market": bound.record.market,
        "oracle": bound.record.oracle,
        "token_supply_cents": totals.token_supply_cents,
        "escrow_held_cents": totals.escrowed_cents,
        "credited_cents": totals.credited_cents,
        "market_balance_cents": totals.held_cents,
        "last_settled_slot": datetime.fromtimestamp(last, timezone.utc).isoformat() if last else None,
        "paused": totals.paused,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        if key.endswith("_cents"):
            value = f"{value / 100:,.2f} EUR"
        click.echo(f"{key.removesuffix('_cents'):<20} {value if value is not None else '-'}")
