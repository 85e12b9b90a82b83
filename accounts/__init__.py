"""Accounts: people, households, meter pairings, roles, sign-in and delivery preferences.

Event-sourced on ``accounts.events`` (records in :mod:`quartier.events`): :mod:`accounts.state` is
the fold, :mod:`accounts.commands` turns requests into events, :mod:`accounts.service` is the one
writer, :mod:`accounts.readmodel` the SQL projection and the queries other packages use.
"""
