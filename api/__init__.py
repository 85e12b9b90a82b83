"""The API layer every HTTP surface is served by: identity, access, validation, bounds, metrics, OpenAPI.

Imports only the core (``quartier``), starlette, spectree, pydantic, prometheus_client and limits;
it knows nothing of accounts, markets or households. See docs/api.md.
"""

from api.access import Allow, allow
from api.app import build_app
from api.errors import ApiError, ErrorView, FieldError, error_response
from api.operation import Call, Operation, operation
from api.principal import Authenticator, ChainAuthenticator, Principal
from api.surface import Surface, SurfaceContext

__all__ = ["Allow", "ApiError", "Authenticator", "Call", "ChainAuthenticator", "ErrorView", "FieldError",
           "Operation", "Principal", "Surface", "SurfaceContext", "allow", "build_app", "error_response",
           "operation"]
