"""The market's REST API (Starlette), versioned under ``/v1``."""
