"""Firebase Cloud Messaging addresses, owned by production code.

``settings.fcm.endpoint`` is the HTTP v1 send URL with the project id as ``{0}`` (the real service's
is ``https://fcm.googleapis.com/v1/projects/{0}/messages:send``); the notifier and the local stack's
FCM-compatible endpoint both derive the server's base address from it here.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def endpoint_base(endpoint: str) -> str:
    """``http://host:port`` of an FCM send URL."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"
