"""The base-model registry: what Mini Studio knows of each model it may fine-tune and serve."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.domain.estimate import ModelShape


class ModelShapeOut(BaseModel):
    """A model's size and shape, as the estimate uses it."""

    parameters: int
    layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    attention_heads: int
    kv_heads: int
    context_length: int

    def to_domain(self) -> ModelShape:
        return ModelShape(**self.model_dump())

    @classmethod
    def of(cls, shape: ModelShape) -> ModelShapeOut:
        return cls(
            parameters=shape.parameters,
            layers=shape.layers,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            vocab_size=shape.vocab_size,
            attention_heads=shape.attention_heads,
            kv_heads=shape.kv_heads,
            context_length=shape.context_length,
        )


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
    shape: ModelShapeOut
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
    shape: ModelShapeOut

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
