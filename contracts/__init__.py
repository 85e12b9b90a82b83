"""The market's settlement contracts: Solidity sources, committed artifacts, Python bindings.

``contracts.market.Market`` is the binding (list, order, settle, withdraw, events);
``contracts.connection`` builds it from Quartier's settings; docs/contracts.md explains the design.
"""
