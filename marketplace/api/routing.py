"""Operations: one declaration per endpoint, from which both the routes and the OpenAPI document come.

An operation names its method, path, the roles allowed, and the pydantic models of its path
parameters, query string, body and answer. The route built from it authenticates, validates each
part with those models (unknown fields and parameters rejected), calls the handler and serializes
the answer with the declared model; the OpenAPI document lists the same models. Every refusal is a
JSON body naming the field and the reason (:func:`error_response`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marketplace.api.views import ErrorView, FieldError
from marketplace.commands import Principal, Rejected, Role
from marketplace.requests import NoQuery, Query

REF = "#/components/schemas/{model}"
ERROR_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing, malformed or unknown bearer token",
    403: "The token's role or participant may not do this",
    404: "No such thing (or not yours to see)",
    409: "Refused by the market's state: gate closed, sold out, already registered",
    415: "The body is not JSON",
    422: "A field is missing, of the wrong type, out of range or unknown",
}


@dataclass
class Call:
    """What a handler gets: who asks, and the validated parts of the request."""

    request: Request
    principal: Principal | None
    path: Any
    query: Any
    body: Any

    @property
    def service(self) -> Any:
        return self.request.app.state.service

    @property
    def me(self) -> Principal:
        assert self.principal is not None
        return self.principal


Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[Role, ...] | None  # None: no token needed
    response: Any
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[Query] = NoQuery
    path_params: type[Query] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""
    adapter: TypeAdapter[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = TypeAdapter(self.response)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def error_response(status: int, code: str, reason: str, field: str | None = None, location: str | None = None,
                   errors: list[FieldError] | None = None, headers: dict[str, str] | None = None) -> Response:
    body = ErrorView(error=code, status=status, field=field, location=location, reason=reason,
                     errors=errors or [FieldError(field=field, location=location, reason=reason)])
    return Response(body.model_dump_json(), status_code=status, media_type="application/json", headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field: not part of this request"
    return str(error["msg"])


def validation_response(exc: ValidationError, location: str) -> Response:
    problems = exc.errors(include_url=False)
    if location == "body" and any(p["type"] == "json_invalid" for p in problems):
        detail = next(p for p in problems if p["type"] == "json_invalid")
        return error_response(400, "malformed_json", f"the body is not valid JSON: {detail['ctx'].get('error', detail['msg'])}",
                              "body", "body")
    errors = [FieldError(field=_field_path(p["loc"]) or location, location=location, reason=_reason(p)) for p in problems]
    first = errors[0]
    return error_response(422, "invalid", first.reason, first.field, location, errors)


class Api:
    def __init__(self, title: str, version: str, description: str) -> None:
        self.title = title
        self.version = version
        self.description = description
        self.operations: list[Operation] = []
        self.authenticate: Callable[[Request, str], Awaitable[Principal | None]] | None = None

    def operation(self, method: str, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method=method, path=path, handler=handler, **spec))
            return handler

        return register

    # --- serving -----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        by_path: dict[str, dict[str, Operation]] = defaultdict(dict)
        for op in self.operations:
            by_path[op.path][op.method] = op
        return [Route(path, self._endpoint(ops), methods=list(ops)) for path, ops in by_path.items()]

    def _endpoint(self, operations: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await self._serve(operations[method], request)

        return endpoint

    async def _serve(self, op: Operation, request: Request) -> Response:
        principal = None
        if op.roles is not None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            challenge = {"WWW-Authenticate": 'Bearer realm="quartier-market"'}
            if scheme.lower() != "bearer" or not token.strip():
                return error_response(401, "unauthenticated", "send Authorization: Bearer <token>",
                                      "Authorization", "header", headers=challenge)
            assert self.authenticate is not None
            principal = await self.authenticate(request, token.strip())
            if principal is None:
                return error_response(401, "unauthenticated", "unknown token", "Authorization", "header",
                                      headers=challenge)
            if principal.role not in op.roles:
                return error_response(403, "forbidden", f"a {principal.role} token cannot do this; allowed: "
                                      f"{', '.join(op.roles)}", "Authorization", "header")
        try:
            path = op.path_params.model_validate(request.path_params) if op.path_params else None
        except ValidationError as exc:
            return validation_response(exc, "path")
        items = request.query_params.multi_items()
        repeated = sorted(k for k, n in Counter(k for k, _ in items).items() if n > 1)
        if repeated:
            return error_response(422, "invalid", "given more than once", repeated[0], "query")
        try:
            query = op.query.model_validate(dict(items))
        except ValidationError as exc:
            return validation_response(exc, "query")
        body = None
        if op.body is not None:
            content_type = request.headers.get("content-type", "application/json")
            if content_type.split(";")[0].strip().lower() != "application/json":
                return error_response(415, "unsupported_media_type", "send the body as application/json",
                                      "Content-Type", "header")
            raw = await request.body()
            if not raw.strip():
                return error_response(422, "invalid", "a JSON object is required", "body", "body")
            try:
                body = op.body.model_validate_json(raw)
            except ValidationError as exc:
                return validation_response(exc, "body")
        try:
            result = await op.handler(Call(request, principal, path, query, body))
        except Rejected as exc:
            location = "body" if op.body and exc.field in op.body.model_fields else (
                "path" if op.path_params and exc.field in op.path_params.model_fields else
                "query" if exc.field in op.query.model_fields else None)
            return error_response(exc.status, exc.code, exc.reason, exc.field, location)
        return Response(op.adapter.dump_json(result), status_code=op.status, media_type="application/json")

    # --- documenting -------------------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        models: list[tuple[type[BaseModel], Any]] = [(ErrorView, "serialization")]
        for op in self.operations:
            if op.body is not None:
                models.append((op.body, "validation"))
            if isinstance(op.response, type) and issubclass(op.response, BaseModel):
                models.append((op.response, "serialization"))
        keys, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
        paths: dict[str, dict[str, Any]] = defaultdict(dict)
        for op in self.operations:
            paths[op.path][op.method.lower()] = self._document(op, keys)
        document = {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "servers": [{"url": "/"}],
            "paths": dict(paths),
            "components": {
                "schemas": defs.get("$defs", {}),
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                               "description": "a token from `quartier market token create` "
                                               "or POST /v1/participants/{participant}/tokens"}},
            },
        }
        return _without_null_defaults(document)

    def _document(self, op: Operation, keys: dict[Any, Any]) -> dict[str, Any]:
        parameters = []
        for location, model in (("path", op.path_params), ("query", op.query)):
            if model is None:
                continue
            schema = model.model_json_schema()
            for name, prop in schema.get("properties", {}).items():
                required = location == "path" or name in schema.get("required", ())
                description = prop.pop("description", None)
                prop.pop("title", None)
                parameter = {"name": name, "in": location, "required": required, "schema": prop}
                if description:
                    parameter["description"] = description
                parameters.append(parameter)
        error_ref = {"$ref": keys[(ErrorView, "serialization")]["$ref"]}
        responses: dict[str, Any] = {
            str(op.status): {"description": "OK", "content": {"application/json": {"schema": self._response_schema(op, keys)}}}
        }
        codes = set(op.errors) | {422}
        if op.roles is not None:
            codes |= {401, 403}
        if op.body is not None:
            codes |= {400, 415}
        for code in sorted(codes):
            responses[str(code)] = {"description": ERROR_DESCRIPTIONS[code],
                                    "content": {"application/json": {"schema": error_ref}}}
        document: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "parameters": parameters,
            "responses": responses,
            "security": [{"bearer": []}] if op.roles is not None else [],
        }
        if op.description:
            document["description"] = op.description
        if op.roles is not None:
            document["x-roles"] = list(op.roles)
            document["tags"] = [op.path.split("/")[2]]
        if op.body is not None:
            document["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": keys[(op.body, "validation")]["$ref"]}}},
            }
        return document

    def _response_schema(self, op: Operation, keys: dict[Any, Any]) -> dict[str, Any]:
        key = (op.response, "serialization")
        if key in keys:
            return {"$ref": keys[key]["$ref"]}
        return op.adapter.json_schema(mode="serialization", ref_template=REF)


def _without_null_defaults(value: Any) -> Any:
    # Optional fields are left out, never null: a "default": null would document the opposite.
    if isinstance(value, dict):
        return {k: _without_null_defaults(v) for k, v in value.items() if not (k == "default" and v is None)}
    if isinstance(value, list):
        return [_without_null_defaults(v) for v in value]
    return value

