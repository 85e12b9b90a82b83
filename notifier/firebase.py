"""The one place that points firebase-admin at the configured FCM endpoint and builds its app.

firebase-admin 7.x has no emulator setting for messaging: every send goes to the class attribute
``messaging._MessagingService.FCM_URL`` (a format string taking the project id), read when the
messaging service of an app is first built. ``configure_endpoint`` sets it from
``settings.fcm.endpoint``; the real service's URL is the default, so production is unchanged.
OAuth tokens come from the service account's ``token_uri``, which the local stack's generated
file points at the local endpoint.

google-auth (2.62) also starts a background "regional access boundary" lookup to
iamcredentials.googleapis.com after a service account's first token fetch. That request has no
business leaving the machine when the endpoint is local (and fails on DNS here), so for any
endpoint that is not Google's the app gets :class:`LocalEndpointCertificate`, whose google-auth
credentials say no lookup is required. The real service keeps google-auth's behaviour unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import firebase_admin
import requests
from firebase_admin import credentials, messaging
from google.oauth2 import service_account

from quartier.settings import FcmSettings
from quartier.fcm import endpoint_base

#: Connections kept open to the endpoint: as many as firebase-admin keeps for the real service.
POOL_SIZE = 100

log = logging.getLogger(__name__)

#: The private attribute firebase-admin formats with the project id for every send.
FCM_URL_ATTRIBUTE = "FCM_URL"


#: Hosts of Google's real FCM service: only these get google-auth's default behaviour.
GOOGLE_API_DOMAIN = "googleapis.com"


class FirebaseSetupError(RuntimeError):
    pass


class NoBoundaryLookupServiceAccount(service_account.Credentials):
    """Service-account credentials that never look up a regional access boundary (a request to
    iamcredentials.googleapis.com): for tokens from a local, FCM-compatible endpoint.
    google-auth's copies (``with_scopes``...) keep the subclass (``_make_copy`` uses ``__class__``)."""

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


class LocalEndpointCertificate(credentials.Certificate):
    """firebase-admin's certificate credential, holding :class:`NoBoundaryLookupServiceAccount`."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        self._g_credential = NoBoundaryLookupServiceAccount.from_service_account_info(
            info, scopes=credentials._scopes
        )


def is_google_endpoint(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return host == GOOGLE_API_DOMAIN or host.endswith("." + GOOGLE_API_DOMAIN)


def credential_for(fcm: FcmSettings) -> credentials.Base:
    """The credential firebase-admin gets for these settings (see the module docstring)."""
    if not fcm.credentials_file:
        if not is_google_endpoint(fcm.endpoint):
            raise FirebaseSetupError(
                f"settings.fcm.credentials_file is empty but settings.fcm.endpoint {fcm.endpoint!r} is not "
                "Google's: a local endpoint needs the service-account file it issued"
            )
        # No key file: Google's application-default credentials (a deployment on Google Cloud).
        return credentials.ApplicationDefault()
    if is_google_endpoint(fcm.endpoint):
        return credentials.Certificate(fcm.credentials_file)
    return LocalEndpointCertificate(fcm.credentials_file)


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
    credential = credential_for(fcm)
    log.info("firebase app %s: project %s, endpoint %s", name, fcm.project_id, fcm.endpoint)
    app = firebase_admin.initialize_app(credential, {"projectId": fcm.project_id, "httpTimeout": 10}, name=name)
    _pool_connections(app, fcm.endpoint)
    return app


def _pool_connections(app: firebase_admin.App, endpoint: str) -> None:
    """Sets up the HTTP session the threaded sender uses:

    - a connection pool as large as the one firebase-admin mounts for fcm.googleapis.com, on the
      configured endpoint (requests' default of 10 makes every thread beyond the tenth open and
      discard a connection);
    - no urllib3 retries: the notifier's retry stage retries transient failures itself, with
      backoff, jitter and Retry-After, so that every attempt is counted in the delivery log;
    - proxies and CA bundle read from the environment once, not on every request: requests'
      ``trust_env`` scans every environment variable twice per request (measured: half of the
      client's CPU per push). A local endpoint never goes through a proxy.
    """
    service = messaging._get_messaging_service(app)
    session = getattr(getattr(service, "_client", None), "session", None)
    if session is None:
        raise FirebaseSetupError(
            f"firebase-admin {firebase_admin.__version__}: the messaging service has no _client.session to pool"
        )
    session.mount(
        endpoint_base(endpoint),
        requests.adapters.HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=0),
    )
    if is_google_endpoint(endpoint):
        session.proxies.update(requests.utils.get_environ_proxies(endpoint_base(endpoint)))
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
