"""Response models derived from the entity they show, so an entity is defined once.

``view_of(Entity)`` gives a pydantic model with each dataclass field of the entity (its type and the
``doc`` of its field metadata as the description); a surface's view subclasses it and says only what
it leaves out, shows differently or adds.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_type_hints

from pydantic import BaseModel, Field, create_model


def view_of(entity: type, *, exclude: tuple[str, ...] = (), types: dict[str, Any] | None = None,
            docs: dict[str, str] | None = None, base: type[BaseModel] = BaseModel) -> Any:
    """The fields of an entity's view: each field of the entity but ``exclude``, of its type unless
    ``types`` says how the API shows it, described as the entity describes it unless ``docs`` says
    otherwise."""
    hints = get_type_hints(entity)
    definitions: dict[str, Any] = {}
    for column in fields(entity):
        if column.name in exclude:
            continue
        annotation = (types or {}).get(column.name, hints[column.name])
        description = (docs or {}).get(column.name, column.metadata.get("doc"))
        definitions[column.name] = (annotation, Field(description=description) if description else ...)
    return create_model(f"{entity.__name__}Fields", __base__=base, **definitions)
