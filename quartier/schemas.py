"""JSON Schemas of the event contracts, generated from the records in ``quartier.events``.

``python -m quartier.schemas`` rewrites ``docs/schemas/``; a test fails when the committed schemas
differ from the code, so third parties always read the contract the code enforces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from quartier import topics

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def schema_documents() -> dict[str, str]:
    """File name → JSON text, one schema per topic (a topic may carry a union of records)."""
    documents = {}
    for topic in topics.ALL:
        schema = msgspec.json.schema(topic.record)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": topic.name,
            "description": f"{topic.description} Key: {topic.key}.",
            **schema,
        }
        documents[f"{topic.name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(path)
