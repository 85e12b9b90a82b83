"""From Quartier's settings to a connected chain, the service accounts and the deployed market."""

from __future__ import annotations

from eth_account import Account
from web3 import Web3

from contracts.devchain import ADMIN, DEV_CHAIN_IDS, ORACLE, dev_account
from contracts.market import Market
from contracts.transactions import Sender
from quartier.settings import Settings


class ChainConfigError(ValueError):
    pass


def connect(settings: Settings) -> Web3:
    """A Web3 client on ``settings.chain.rpc_url``, checked to be the configured chain."""
    w3 = Web3(Web3.HTTPProvider(settings.chain.rpc_url, request_kwargs={"timeout": 30}))
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:
        raise ChainConfigError(
            f"chain.rpc_url {settings.chain.rpc_url} does not answer ({exc.__class__.__name__}); "
            "is the stack up (quartier stack up)?"
        ) from None
    if chain_id != settings.chain.chain_id:
        raise ChainConfigError(
            f"chain.chain_id is {settings.chain.chain_id} but {settings.chain.rpc_url} is chain {chain_id}"
        )
    return w3


def _sender(w3: Web3, key: str, field: str, dev_index: int) -> Sender:
    if key:
        try:
            return Sender(w3, Account.from_key(key))
        except (ValueError, TypeError) as exc:
            raise ChainConfigError(f"chain.{field} is not a valid private key: {exc}") from None
    if w3.eth.chain_id not in DEV_CHAIN_IDS:
        raise ChainConfigError(f"chain.{field} must be set on chain {w3.eth.chain_id} (dev accounts are for dev chains)")
    return Sender(w3, dev_account(dev_index))


def admin_sender(w3: Web3, settings: Settings) -> Sender:
    """The market's admin: deploys, mints on test chains, pauses."""
    return _sender(w3, settings.chain.admin_key, "admin_key", ADMIN)


def oracle_sender(w3: Web3, settings: Settings) -> Sender:
    """The settlement service account (holds the oracle role)."""
    return _sender(w3, settings.chain.oracle_key, "oracle_key", ORACLE)


def market(w3: Web3, settings: Settings) -> Market:
    """The market deployed on ``w3``'s chain, as recorded under ``settings.state_dir``."""
    return Market.from_state(w3, settings.state_dir)
