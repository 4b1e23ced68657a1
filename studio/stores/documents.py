"""Models to MongoDB documents and back: the model's `id` is the document's `_id`."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)


def to_document(model: BaseModel) -> dict[str, Any]:
    """Return the JSON-compatible document for `model`, its `id` moved to `_id`."""
    doc = model.model_dump(mode="json")
    doc["_id"] = doc.pop("id")
    return doc


def from_document(model: type[ModelT], doc: dict[str, Any] | None) -> ModelT | None:
    """Return the model stored in `doc`, or None for no document."""
    if doc is None:
        return None
    fields = dict(doc)
    fields["id"] = fields.pop("_id")
    return model.model_validate(fields)
