"""The base-model registry: what Mini Studio knows of each model it may fine-tune and serve."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.domain.estimate import ModelShape


class BaseModelCreate(BaseModel):
    """Body of `POST /admin/base-models`.

    `source` is where the weights come from (a Hugging Face id, or a directory every node can read);
    it defaults to `name`. `config` is the model's `config.json`; it may be left out when `source` is a
    local directory holding one.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    source: str | None = Field(default=None, min_length=1, max_length=1000)
    config: dict[str, Any] | None = None
    chat_template: bool = True
    description: str | None = Field(default=None, max_length=1000)


class BaseModelEntry(BaseModel):
    """A registered base model, in `base_models` (`_id` = `id` = its name)."""

    id: str
    source: str
    shape: ModelShape
    chat_template: bool
    description: str | None = None
    builtin: bool = False
    created_at: int


class BaseModelPublic(BaseModel):
    object: Literal["base_model"] = "base_model"
    id: str
    source: str
    parameters: int
    context_length: int
    chat_template: bool
    description: str | None
    builtin: bool
    created_at: int
    shape: ModelShape

    @classmethod
    def of(cls, entry: BaseModelEntry) -> BaseModelPublic:
        return cls(
            id=entry.id,
            source=entry.source,
            parameters=entry.shape.parameters,
            context_length=entry.shape.context_length,
            chat_template=entry.chat_template,
            description=entry.description,
            builtin=entry.builtin,
            created_at=entry.created_at,
            shape=entry.shape,
        )
