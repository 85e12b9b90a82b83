"""The one place that points firebase-admin at the configured FCM endpoint and builds its app.

firebase-admin 7.x has no emulator setting for messaging: every send goes to the class attribute
``messaging._MessagingService.FCM_URL`` (a format string taking the project id), read when the
messaging service of an app is first built. ``configure_endpoint`` sets it from
``settings.fcm.endpoint``; the real service's URL is the default, so production is unchanged.
OAuth tokens come from the service account's ``token_uri``, which the local stack's generated
file points at the local endpoint.
"""

from __future__ import annotations

import hashlib
import logging

import firebase_admin
import requests
from firebase_admin import _http_client, credentials, messaging

from quartier.settings import FcmSettings
from quartier.stack.fcm import endpoint_base

#: Connections kept open to the endpoint: as many as firebase-admin keeps for the real service.
POOL_SIZE = 100

log = logging.getLogger(__name__)

#: The private attribute firebase-admin formats with the project id for every send.
FCM_URL_ATTRIBUTE = "FCM_URL"


class FirebaseSetupError(RuntimeError):
    pass


def configure_endpoint(endpoint: str) -> None:
    """Makes firebase-admin send to ``endpoint`` (``...{0}...`` is the project id)."""
    service = getattr(messaging, "_MessagingService", None)
    if service is None or not isinstance(getattr(service, FCM_URL_ATTRIBUTE, None), str):
        raise FirebaseSetupError(
            "firebase_admin.messaging._MessagingService.FCM_URL is gone: this firebase-admin version "
            f"({firebase_admin.__version__}) needs a new way to set settings.fcm.endpoint"
        )
    if "{0}" not in endpoint:
        raise FirebaseSetupError(f"settings.fcm.endpoint must contain {{0}} for the project id: {endpoint!r}")
    setattr(service, FCM_URL_ATTRIBUTE, endpoint)


def firebase_app(fcm: FcmSettings) -> firebase_admin.App:
    """The firebase app for these settings: one named app per (project, endpoint, credentials)."""
    configure_endpoint(fcm.endpoint)
    if not fcm.project_id:
        raise FirebaseSetupError("settings.fcm.project_id is empty")
    identity = f"{fcm.project_id}|{fcm.endpoint}|{fcm.credentials_file}"
    name = f"quartier-{fcm.project_id}-{hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()}"
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        pass
    credential = (
        credentials.Certificate(fcm.credentials_file)
        if fcm.credentials_file
        # No key file: Google's application-default credentials (a deployment on Google Cloud).
        else credentials.ApplicationDefault()
    )
    log.info("firebase app %s: project %s, endpoint %s", name, fcm.project_id, fcm.endpoint)
    app = firebase_admin.initialize_app(credential, {"projectId": fcm.project_id, "httpTimeout": 10}, name=name)
    _pool_connections(app, endpoint_base(fcm.endpoint))
    return app


def _pool_connections(app: firebase_admin.App, base_url: str) -> None:
    """Gives the threaded sender (``send_each``) a connection pool as large as the one
    firebase-admin mounts for fcm.googleapis.com; requests' default of 10 makes every thread
    beyond the tenth open and discard a connection (measured: about 10% slower, and a warning
    per message)."""
    service = messaging._get_messaging_service(app)
    session = getattr(getattr(service, "_client", None), "session", None)
    if session is None:
        raise FirebaseSetupError(
            f"firebase-admin {firebase_admin.__version__}: the messaging service has no _client.session to pool"
        )
    session.mount(
        base_url,
        requests.adapters.HTTPAdapter(
            pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=_http_client.DEFAULT_RETRY_CONFIG
        ),
    )
