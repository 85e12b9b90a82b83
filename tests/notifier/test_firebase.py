"""firebase-admin has no emulator setting: the send URL is set through one private attribute."""

from __future__ import annotations

import socket
from typing import Any, Callable

import pytest
from firebase_admin import messaging

from notifier.firebase import FirebaseSetupError, configure_endpoint, firebase_app
from quartier.settings import Settings
from quartier.stack.fcm import fetch_messages


def test_firebase_admin_still_reads_its_send_url_from_fcm_url() -> None:
    # If a firebase-admin upgrade renames or drops it, pushes would go to Google instead: fail here.
    assert isinstance(messaging._MessagingService.FCM_URL, str)
    assert "{0}" in messaging._MessagingService.FCM_URL


def test_setting_the_endpoint_fails_loudly_once_the_attribute_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(messaging._MessagingService, "FCM_URL")
    with pytest.raises(FirebaseSetupError, match="FCM_URL is gone"):
        configure_endpoint("http://127.0.0.1:1/v1/projects/{0}/messages:send")


def test_an_endpoint_without_the_project_placeholder_is_refused() -> None:
    with pytest.raises(FirebaseSetupError, match="settings.fcm.endpoint"):
        configure_endpoint("http://127.0.0.1:1/v1/projects/p/messages:send")


def test_one_app_per_settings_sending_to_its_own_project(
    fcm: dict[str, Any], make_settings: Callable[..., Settings]
) -> None:
    first, second = make_settings(fcm), make_settings(fcm)
    assert firebase_app(first.fcm) is firebase_app(first.fcm)
    assert firebase_app(first.fcm) is not firebase_app(second.fcm)
    with pytest.warns(DeprecationWarning):
        message = messaging.Message(token="device-1", data={"to": "second"})
    messaging.send(message, app=firebase_app(second.fcm))
    assert fetch_messages(first, first.fcm.project_id) == []
    assert [m["message"]["data"] for m in fetch_messages(second, second.fcm.project_id)] == [{"to": "second"}]


def test_a_local_endpoint_never_makes_google_auth_look_up_a_regional_access_boundary(
    fcm: dict[str, Any], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth would start a background request to iamcredentials.googleapis.com after the
    first token: nothing may leave the machine when the endpoint is local."""
    from google.auth import _regional_access_boundary_utils as boundary
    from google.oauth2 import service_account

    from notifier.firebase import LocalEndpointCertificate, NoBoundaryLookupServiceAccount, credential_for

    # google-auth 2.62 looks up unconditionally; 2.63 only when this is set: on, so the test shows
    # the lookup with either version.
    monkeypatch.setenv("GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED", "true")
    lookups: list[str] = []
    monkeypatch.setattr(
        boundary._RegionalAccessBoundaryManager, "maybe_start_refresh",
        lambda self, credentials, request: lookups.append(type(credentials).__name__),
    )
    resolved: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    settings = make_settings(fcm)
    app = firebase_app(settings.fcm)
    assert isinstance(app.credential, LocalEndpointCertificate)
    assert isinstance(app.credential.get_credential(), NoBoundaryLookupServiceAccount)
    with pytest.warns(DeprecationWarning):
        message = messaging.Message(token="device-1", data={"k": "v"})
    messaging.send(message, app=app)  # the first send fetches a token
    messaging.send(message, app=app)
    assert lookups == []
    assert set(resolved) == {"127.0.0.1"}

    # The same token fetch with google-auth's own credentials would have started the lookup:
    # this test sees it when it happens.
    plain = service_account.Credentials.from_service_account_file(
        settings.fcm.credentials_file, scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )
    from google.auth.transport.requests import Request

    plain.refresh(Request())
    plain.before_request(Request(), "POST", settings.fcm.endpoint.format("p"), {})
    assert lookups == ["Credentials"]
    # The real service keeps google-auth's behaviour.
    google = settings.fcm.model_copy(update={"endpoint": "https://fcm.googleapis.com/v1/projects/{0}/messages:send"})
    assert type(credential_for(google)).__name__ == "Certificate"


def test_a_local_endpoint_without_a_service_account_file_is_refused(make_settings: Callable[..., Settings]) -> None:
    from notifier.firebase import credential_for

    with pytest.raises(FirebaseSetupError, match="credentials_file is empty"):
        credential_for(make_settings().fcm)
