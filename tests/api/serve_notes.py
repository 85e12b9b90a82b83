"""Serves the notes surface with uvicorn in this process: ``python -m tests.api.serve_notes PORT``."""

from __future__ import annotations

import sys

import uvicorn
from prometheus_client import CollectorRegistry

from api.compose import compose
from quartier.settings import Settings
from tests.api.surface import surface

if __name__ == "__main__":
    app = compose(Settings(), CollectorRegistry(), [("notes", surface)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
