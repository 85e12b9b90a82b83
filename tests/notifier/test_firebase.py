"""firebase-admin has no emulator setting: the send URL is set through one private attribute."""

from __future__ import annotations

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
