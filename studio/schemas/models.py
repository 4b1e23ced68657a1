"""OpenAI's model objects (`GET /v1/models`): base models a client may use and its fine-tuned models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelDeploymentRef(BaseModel):
    """Where a model is deployed, when it is (`/v1/deployments/{id}` has the rest)."""

    id: str
    status: str
    target: str
    placement: str


class ModelPublic(BaseModel):
    """OpenAI's `model`, plus what Mini Studio knows: base or fine-tuned, and where a fine-tune came from."""

    object: Literal["model"] = "model"
    id: str
    created: int
    owned_by: str
    kind: Literal["base", "fine-tuned"]
    base_model: str | None = None
    fine_tuning_job: str | None = None
    fine_tuning_method: Literal["lora", "full"] | None = None
    context_length: int | None = None
    deployment: ModelDeploymentRef | None = None


class ModelDeleted(BaseModel):
    """OpenAI's `ModelDeleted`: the answer of `DELETE /v1/models/{id}`."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
