"""Delivery channels: one module per way of reaching a household (push, email)."""
