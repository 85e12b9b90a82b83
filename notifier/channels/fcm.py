"""Push notifications through Firebase Cloud Messaging, with the firebase-admin SDK.

Each message is one ``messaging.send`` call on a long-lived pool of threads: the same HTTP request,
error mapping and connection pool as ``send_each`` (which starts a new pool of one thread per
message on every call), but each acceptance is known the moment it happens, so it goes to the
sent journal right then (notifier.sent_log) and a kill leaves microseconds, not a batch, between
"FCM accepted" and "recorded". Measured here (bench/notifier.py, docs/notifier.md): this and
``send_each`` in batches of 100-500 send at the same rate, and both are 2-3x faster than
``send_each_async``, whose httpx pool costs about 2 ms of CPU per message.

A batch is handed to the pool as one task per thread, each taking the next message from a shared
queue until none is left, and the event loop waits for the batch once: a future per message cost
the loop a wake-up per message while the push threads wanted the interpreter (measured: about
0.2 ms of CPU per push less).

One process's push threads share its interpreter lock and a push costs about 0.8 ms of
firebase-admin/requests CPU, so one process tops out near 1,000 pushes/s; :class:`FcmProcesses`
spreads the batches over ``push_processes`` worker processes (notifier.channels.fcm_processes).

What a device shows: the Android notification ``tag`` and the APNs ``apns-collapse-id`` are both
the alert episode's id, so the resolution replaces the raised notification of the same episode, and
a push sent twice (a kill between FCM's acceptance and the journal line, docs/notifier.md) replaces
the first instead of showing twice. Different episodes never replace each other.

One attempt per call: firebase-admin's own urllib3 retries are turned off (notifier.firebase), so
the attempts in the delivery log are exact. A failure that may pass later (503 UNAVAILABLE, 500
INTERNAL, 429 QUOTA_EXCEEDED, a lost connection) comes back as *transient* with the Retry-After the
service announced; the retry stage schedules it. An unregistered token is *gone*; the rest is
permanent and keeps FCM's reason.
"""

from __future__ import annotations

import asyncio
import email.utils
import queue
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import firebase_admin
from firebase_admin import exceptions, messaging

from notifier.notification import Notification, Outcome
from notifier.render import Renderer
from notifier.sent_log import SentJournal

#: FCM refuses a data payload over 4 KB: a grouped push lists this many alert ids at most.
MAX_IDS_IN_DATA = 40
#: How long FCM keeps a push for an offline device: a fuse warning is worthless after minutes.
TTL_URGENT_S = 600
TTL_DEFAULT_S = 86_400

# 7.7 deprecates ``token`` for ``fid`` (installation ids); what the app registers with us is an FCM
# registration token, which is still what ``token`` addresses. Filtered once: catch_warnings is
# not thread-safe.
warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)

#: Errors after which the same message may be accepted later.
_TRANSIENT = (
    messaging.QuotaExceededError,
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,  # firebase-admin's wrapper for connection errors without a reply
)


class FcmChannel:
    name = "push"

    def __init__(
        self,
        app: firebase_admin.App,
        renderer: Renderer,
        journal: SentJournal | None = None,
        threads: int = 16,
    ) -> None:
        self.app = app
        self.renderer = renderer
        self.journal = journal
        self.threads = threads
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="fcm-send")

    async def send(self, notifications: Sequence[Notification]) -> list[Outcome]:
        """Sends on every thread at once; outcomes in the order given."""
        return await asyncio.to_thread(self.send_blocking, notifications)

    def send_blocking(self, notifications: Sequence[Notification]) -> list[Outcome]:
        """``send`` for a caller that is not on an event loop (a push worker process)."""
        outcomes: list[Outcome | None] = [None] * len(notifications)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(notifications)):
            todo.put(i)

        def work() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                outcomes[i] = self._send_one(notifications[i])

        workers = [self.executor.submit(work) for _ in range(min(self.threads, len(notifications)))]
        for worker in workers:
            worker.result()
        return outcomes  # type: ignore[return-value]  # every index was filled

    async def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _send_one(self, notification: Notification) -> Outcome:
        """Runs in a pool thread."""
        try:
            message = self.message(notification)
            provider_id = messaging.send(message, app=self.app)
        except messaging.UnregisteredError:
            return Outcome(notification, "failed", reason="unregistered device token", address_gone=True)
        except _TRANSIENT as error:
            return Outcome(notification, "failed", reason=_reason(error), transient=True, retry_after_s=_retry_after_s(error))
        except exceptions.FirebaseError as error:
            return Outcome(notification, "failed", reason=_reason(error))
        except ValueError as error:  # firebase-admin validates the message before sending
            return Outcome(notification, "failed", reason=f"invalid message: {error}")
        if self.journal is not None:
            self.journal.note(notification.keys, provider_id)
        return Outcome(notification, "sent", provider_id=provider_id)

    def message(self, notification: Notification) -> messaging.Message:
        alert = notification.alert
        if notification.grouped:
            words = self.renderer.render_group(notification.alerts, notification.language, notification.zone)
            ids = [a.id for a in notification.alerts]
            data = {
                "kind": "group",
                "count": str(len(ids)),
                "alert_ids": ",".join(ids[:MAX_IDS_IN_DATA]),
            }
            body = words.summary
            collapse, tag = "group", f"group-{ids[0]}"
        else:
            words = self.renderer.render_push(alert, notification.language, notification.zone)
            data = {
                "alert_id": alert.id,
                "kind": alert.kind,
                "state": alert.state,
                "meter": alert.meter or "",
                "value": repr(alert.value),
                "threshold": repr(alert.threshold),
                "at_ms": str(alert.at_ms),
            }
            body = f"{words.summary} {words.advice}" if notification.urgent and alert.state == "raised" else words.summary
            # One pending push per kind on an offline device (the latest wins); on the phone,
            # one notification per episode: its resolution, or a second copy, replaces it.
            collapse, tag = alert.kind, alert.id
        urgent = notification.urgent
        return messaging.Message(
            token=notification.address,
            notification=messaging.Notification(title=words.title, body=body),
            data=data,
            android=messaging.AndroidConfig(
                priority="high" if urgent else "normal",
                collapse_key=collapse,
                ttl=TTL_URGENT_S if urgent else TTL_DEFAULT_S,
                notification=messaging.AndroidNotification(tag=tag, channel_id="urgent" if urgent else "alerts"),
            ),
            apns=messaging.APNSConfig(
                headers={
                    "apns-priority": "10" if urgent else "5",
                    # APNs has no offline collapse key: this is the on-device replacement, as tag.
                    "apns-collapse-id": tag,
                    "apns-push-type": "alert",
                },
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(
                        sound="default" if urgent else None,
                        thread_id=alert.meter or "operator",
                        custom_data={"interruption-level": "time-sensitive" if urgent else "active"},
                    )
                ),
            ),
        )


def _retry_after_s(error: exceptions.FirebaseError) -> float | None:
    """The wait the service asked for (seconds or an HTTP date), if it said."""
    response = error.http_response
    header = response.headers.get("Retry-After") if response is not None else None
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: the retry stage's own backoff


def _reason(error: exceptions.FirebaseError) -> str:
    return f"{type(error).__name__} ({error.code}): {error}"
