"""The local FCM-compatible HTTP server (Starlette on uvicorn), answering as the real service does.

``python -m quartier.stack.fcm_server --port P --workdir DIR [--retry-after S]`` serves:

- ``POST /token``: Google's OAuth 2.0 JWT-bearer grant, as google-auth's service-account
  credentials call it. The assertion must be signed by the key in ``DIR/service-account.json``,
  with that file's ``client_email`` as issuer and Google's token server as audience; the answer is
  ``{"access_token", "expires_in": 3600, "token_type": "Bearer"}``.
- ``POST /v1/projects/{project}/messages:send``: FCM HTTP v1. It checks the bearer token it issued
  (401 UNAUTHENTICATED otherwise), validates the body like FCM (unknown fields, types, exactly one
  target, string data values, reserved data keys, 4 KB data limit: 400 INVALID_ARGUMENT naming the
  field), stores the message and answers ``{"name": "projects/{project}/messages/{id}"}``.
  ``validate_only`` messages are checked and answered, not stored. Any project id is accepted, so
  each test or demo run can use its own.
- ``GET /_store/messages?project=P``: every stored message of a project, oldest first;
  ``GET /_store/attempts?project=P&token=T``: every attempt for one device token;
  ``GET /_store/count?project=P``: how many messages a project has (cheap, for polling);
  ``GET /_health``.

Error injection, by device-token prefix (the rest of the token is free, so tests stay apart):

- ``unregistered-...``: always 404 NOT_FOUND with FCM error code UNREGISTERED;
- ``invalid-...``: always 400 INVALID_ARGUMENT (not a valid registration token);
- ``flaky503-N-...``: the first N attempts answer 503 UNAVAILABLE, then it succeeds;
- ``quota429-N-...``: the first N attempts answer 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with
  ``Retry-After: S``; a retry that comes before the announced time is answered 429 again without
  counting towards N, and is recorded with ``"early": true``, so a test can tell whether a client
  honoured Retry-After.

Counters live in memory: a restarted endpoint starts them again. Stored messages are JSON lines
under ``DIR/messages/<project>.jsonl`` and survive restarts.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import msgspec
import uvicorn
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quartier.stack.fcm import SERVICE_ACCOUNT_FILE

ACCESS_TOKEN_LIFETIME_S = 3600
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
INJECTED_FAILURES = re.compile(r"^(flaky503|quota429)-(\d+)-")
# FCM refuses these data keys (see the HTTP v1 reference for Message.data).
RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
MAX_DATA_BYTES = 4096


# --- the FCM v1 message, as far as FCM validates it ------------------------------------------


class Notification(msgspec.Struct, forbid_unknown_fields=True):
    title: str | None = None
    body: str | None = None
    image: str | None = None


class FcmOptions(msgspec.Struct, forbid_unknown_fields=True):
    analytics_label: str | None = None


class Message(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    # Values are checked one by one below, so that the error names the key (msgspec says ``[...]``).
    data: dict[str, Any] | None = None
    notification: Notification | None = None
    # Platform overrides are passed through to the device; FCM checks them in depth, we check shape.
    android: dict[str, Any] | None = None
    webpush: dict[str, Any] | None = None
    apns: dict[str, Any] | None = None
    fcm_options: FcmOptions | None = None
    token: str | None = None
    fid: str | None = None
    topic: str | None = None
    condition: str | None = None


class SendRequest(msgspec.Struct, forbid_unknown_fields=True):
    message: Message
    validate_only: bool = False


_send_request = msgspec.json.Decoder(SendRequest)
_raw_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


# --- FCM's error replies ---------------------------------------------------------------------


def fcm_error(
    http_status: int,
    status: str,
    message: str,
    fcm_code: str | None = None,
    field_violation: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error exactly in FCM v1's format, which firebase-admin maps to its exception classes."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_code})
    if field_violation:
        details.append(
            {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field_violation[0], "description": field_violation[1]}]}
        )
    body: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=http_status, headers=headers)


def invalid_argument(field_path: str, description: str) -> JSONResponse:
    return fcm_error(400, "INVALID_ARGUMENT", description, "INVALID_ARGUMENT", (field_path, description))


def validate_message(raw: bytes) -> tuple[SendRequest | None, JSONResponse | None]:
    try:
        request = _send_request.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else "$"
        field_path = path.removeprefix("$").lstrip(".") or "request"
        return None, invalid_argument(field_path, f"Invalid JSON payload received. {text}")
    except msgspec.DecodeError as exc:
        return None, invalid_argument("request", f"Invalid JSON payload received. {exc}")
    message = request.message
    targets = [name for name in ("token", "fid", "topic", "condition") if getattr(message, name) is not None]
    if len(targets) != 1:
        return None, invalid_argument(
            "message", f"Exactly one of token, fid, topic or condition must be set (got {targets or 'none'})."
        )
    target = targets[0]
    value = getattr(message, target)
    if not value or any(ch.isspace() for ch in value) or len(value) > 4096:
        return None, invalid_argument(f"message.{target}", f"Invalid {target}: {value!r}.")
    if message.data:
        for key, item in message.data.items():
            if not isinstance(item, str):
                return None, invalid_argument(
                    f"message.data.{key}", f"Invalid value at 'message.data.{key}' (TYPE_STRING): {item!r}"
                )
            if key in RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
                return None, invalid_argument(f"message.data.{key}", f"Invalid data payload key: {key}.")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in message.data.items())
        if size > MAX_DATA_BYTES:
            return None, invalid_argument("message.data", f"Data payload is {size} bytes; the limit is 4096.")
    return request, None


# --- state -----------------------------------------------------------------------------------


@dataclass
class TokenHistory:
    """What the endpoint remembers about one device token: attempts and injected failures left."""

    failures_left: int
    retry_not_before: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)


class Endpoint:
    def __init__(self, workdir: Path, retry_after_s: int) -> None:
        account = json.loads((workdir / SERVICE_ACCOUNT_FILE).read_text())
        private_key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
        self.public_key = private_key.public_key()
        self.client_email: str = account["client_email"]
        self.token_uri: str = account["token_uri"]
        self.retry_after_s = retry_after_s
        self.store_dir = workdir / "messages"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.access_tokens: dict[str, float] = {}
        # One append-only file per project, kept open; unbuffered, so a reader (and a kill) sees
        # every accepted message at once.
        self.stores: dict[str, Any] = {}
        self.histories: dict[tuple[str, str], TokenHistory] = {}

    # --- OAuth ---

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": f"grant_type must be {JWT_BEARER_GRANT}"},
                status_code=400,
            )
        try:
            jwt.decode(
                form.get("assertion", ""),
                self.public_key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                # google-auth always addresses the assertion to Google's token server, whatever
                # token_uri says; the real server checks the same audience.
                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri],
                issuer=self.client_email,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}, status_code=400)
        access_token = "ya29.local-" + secrets.token_urlsafe(32)
        self.access_tokens[access_token] = time.time() + ACCESS_TOKEN_LIFETIME_S
        return JSONResponse(
            {"access_token": access_token, "expires_in": ACCESS_TOKEN_LIFETIME_S, "token_type": "Bearer"}
        )

    def authorised(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        expires = self.access_tokens.get(credential) if scheme.lower() == "bearer" else None
        return expires is not None and expires > time.time()

    # --- FCM v1 send ---

    async def send(self, request: Request) -> Response:
        project = request.path_params["project"]
        if not self.authorised(request):
            return fcm_error(
                401, "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        if not PROJECT_ID.match(project):
            return fcm_error(404, "NOT_FOUND", f"Project {project!r} not found.")
        raw = await request.body()
        send_request, error = validate_message(raw)
        if error is not None:
            return error
        assert send_request is not None
        device = send_request.message.token or send_request.message.fid
        if device is not None and (injected := self.injected_error(project, device)) is not None:
            return injected
        message_id = uuid.uuid4().hex
        name = f"projects/{project}/messages/{message_id}"
        if not send_request.validate_only:
            # Stored as the client sent it, not as re-encoded from the validated struct.
            record = {"name": name, "received_ms": int(time.time() * 1000), "message": _raw_json.decode(raw)["message"]}
            self.store(project).write(_encode(record) + b"\n")
        if device is not None:
            self.note_attempt(project, device, 200, early=False)
        return JSONResponse({"name": name})

    def store(self, project: str) -> Any:
        if (out := self.stores.get(project)) is None:
            out = self.stores[project] = open(self.store_dir / f"{project}.jsonl", "ab", buffering=0)
        return out

    def injected_error(self, project: str, device: str) -> JSONResponse | None:
        if device.startswith("unregistered-"):
            self.note_attempt(project, device, 404, early=False)
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if device.startswith("invalid-"):
            self.note_attempt(project, device, 400, early=False)
            return invalid_argument("message.token", "The registration token is not a valid FCM registration token")
        match = INJECTED_FAILURES.match(device)
        if not match:
            return None
        history = self.history(project, device, int(match[2]))
        now = time.time()
        if match[1] == "quota429":
            early = now < history.retry_not_before
            if early or history.failures_left > 0:
                if not early:
                    history.failures_left -= 1
                    history.retry_not_before = now + self.retry_after_s
                self.note_attempt(project, device, 429, early=early)
                return fcm_error(
                    429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages to this device.",
                    "QUOTA_EXCEEDED", headers={"Retry-After": str(self.retry_after_s)},
                )
            return None
        if history.failures_left > 0:
            history.failures_left -= 1
            self.note_attempt(project, device, 503, early=False)
            return fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
        return None

    def history(self, project: str, device: str, failures: int = 0) -> TokenHistory:
        return self.histories.setdefault((project, device), TokenHistory(failures_left=failures))

    def note_attempt(self, project: str, device: str, status: int, early: bool) -> None:
        self.history(project, device).attempts.append({"at_ms": int(time.time() * 1000), "status": status, "early": early})

    # --- reading back ---

    async def messages(self, request: Request) -> Response:
        project = request.query_params.get("project", "")
        if not PROJECT_ID.match(project):
            return JSONResponse({"error": f"query parameter project: invalid project id {project!r}"}, status_code=400)
        path = self.store_dir / f"{project}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return JSONResponse({"messages": [json.loads(line) for line in lines]})

    async def count(self, request: Request) -> Response:
        project = request.query_params.get("project", "")
        if not PROJECT_ID.match(project):
            return JSONResponse({"error": f"query parameter project: invalid project id {project!r}"}, status_code=400)
        path = self.store_dir / f"{project}.jsonl"
        with open(path, "rb") if path.exists() else _nothing() as stored:
            return JSONResponse({"count": sum(1 for _ in stored)})

    async def attempts(self, request: Request) -> Response:
        project = request.query_params.get("project", "")
        token = request.query_params.get("token", "")
        history = self.histories.get((project, token))
        return JSONResponse({"attempts": history.attempts if history else []})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"service": "fcm"})


def _nothing() -> Any:
    import io

    return io.BytesIO()


def build_app(workdir: Path, retry_after_s: int = 1) -> Starlette:
    endpoint = Endpoint(workdir, retry_after_s)
    return Starlette(
        routes=[
            Route("/token", endpoint.token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", endpoint.send, methods=["POST"]),
            Route("/_store/messages", endpoint.messages, methods=["GET"]),
            Route("/_store/attempts", endpoint.attempts, methods=["GET"]),
            Route("/_store/count", endpoint.count, methods=["GET"]),
            Route("/_health", endpoint.health, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local FCM-compatible endpoint")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--retry-after", type=int, default=1, help="seconds announced with injected 429s")
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(args.workdir, args.retry_after),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
