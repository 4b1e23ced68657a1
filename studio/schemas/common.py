"""Shapes shared by every resource: lists, errors."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[ItemT]
    has_more: bool = False


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, the only one on the wire."""

    error: ErrorDetail
