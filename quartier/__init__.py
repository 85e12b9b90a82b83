"""Quartier's core: settings, event contracts, topic declarations, the CLI and the local stack.

Every other package may import this one; this one imports none of them.
"""
