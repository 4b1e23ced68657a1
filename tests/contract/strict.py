"""A strict check of a JSON body against one of the `openai` SDK's own models (`openai.types`).

The SDK parses leniently (missing keys default, unknown keys are kept), so a body it accepts can still
differ from OpenAI's. `assert_openai_shape` asks more:

- pydantic validation of the whole body in strict mode (no coercion: a string is not an int);
- at every object, nested ones included, the key set equal to the model's fields: none missing (a field
  OpenAI always sends, `null` included, must be there: `logprobs: null`, `refusal: null`), and none
  extra. The exceptions are spelled out by the caller, by path: `omitted` (fields OpenAI itself leaves
  out in that answer) and `extras` (Mini Studio's or vLLM's additions, each one named).

Paths are dotted field names, `[]` for any item of a list: `data[].error.kind`, `choices[].logprobs`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from openai.types.shared import ErrorObject
from pydantic import BaseModel

JsonObject = dict[str, Any]
# OpenAI sends `error.misalignment` only when a safety review blocked the request.
ERROR_OMITTED = frozenset({"error.misalignment"})


class ErrorBody(BaseModel):
    """The body of every OpenAI error answer (the SDK reads `error` into its `ErrorObject`)."""

    error: ErrorObject


def _arms(annotation: Any) -> tuple[list[Any], bool]:
    """Return the non-None arms of a (possibly Optional / Union / Annotated) annotation and whether
    None is allowed."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        arms: list[Any] = []
        nullable = False
        for arm in typing.get_args(annotation):
            inner, inner_nullable = _arms(arm)
            arms += inner
            nullable = nullable or inner_nullable or arm is type(None)
        return arms, nullable
    if annotation is type(None):
        return [], True
    return [annotation], False


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


class _Checker:
    def __init__(self, *, omitted: Iterable[str], extras: Iterable[str]) -> None:
        self.omitted = frozenset(omitted)
        self.extras = frozenset(extras)

    def value(self, value: Any, annotation: Any, path: str) -> list[str]:
        """Return the key-set problems of `value` read as `annotation` (types are pydantic's job)."""
        arms, nullable = _arms(annotation)
        if value is None:
            return [] if nullable or not arms else [f"{path or '<root>'}: null where OpenAI's shape has none"]
        if not arms:
            return []
        results = [self._one(value, arm, path) for arm in arms]
        # A union: the value is read as the arm it fits; report the closest arm's problems otherwise.
        return min(results, key=len)

    def _one(self, value: Any, annotation: Any, path: str) -> list[str]:
        model = _model(annotation)
        if model is not None:
            if not isinstance(value, dict):
                return [f"{path or '<root>'}: expected an object, got {type(value).__name__}"]
            return self.object(value, model, path)
        origin = typing.get_origin(annotation)
        if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006
            (item,) = typing.get_args(annotation) or (Any,)
            return [problem for entry in value for problem in self.value(entry, item, f"{path}[]")]
        if origin in (dict, typing.Dict) and isinstance(value, dict):  # noqa: UP006
            _, item = typing.get_args(annotation) or (str, Any)
            return [problem for key in value for problem in self.value(value[key], item, f"{path}.{key}")]
        return []

    def object(self, value: JsonObject, model: type[BaseModel], path: str) -> list[str]:
        prefix = f"{path}." if path else ""
        fields = {(field.alias or name): field for name, field in model.model_fields.items()}
        problems = []
        for key in fields.keys() - value.keys():
            if f"{prefix}{key}" not in self.omitted:
                problems.append(f"{prefix}{key}: missing (OpenAI's {model.__name__} has it)")
        for key in value.keys() - fields.keys():
            if f"{prefix}{key}" not in self.extras:
                problems.append(f"{prefix}{key}: not a field of OpenAI's {model.__name__}")
        for key in value.keys() & fields.keys():
            problems += self.value(value[key], fields[key].annotation, f"{prefix}{key}")
        return problems


def openai_shape_problems(
    body: Any, model: type[BaseModel], *, omitted: Iterable[str] = (), extras: Iterable[str] = ()
) -> list[str]:
    """Return how `body` differs from OpenAI's `model` (empty when it matches; see the module doc)."""
    from pydantic import ValidationError

    problems: list[str] = []
    try:
        model.model_validate(body, strict=True)
    except ValidationError as exc:
        problems += [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
    checker = _Checker(omitted=omitted, extras=extras)
    problems += checker.value(body, model, "")
    return problems


def assert_openai_shape(
    body: Any, model: type[BaseModel], *, omitted: Iterable[str] = (), extras: Iterable[str] = ()
) -> None:
    """Fail, listing every difference, unless `body` matches OpenAI's `model` strictly."""
    problems = openai_shape_problems(body, model, omitted=omitted, extras=extras)
    assert not problems, f"not OpenAI's {model.__name__}:\n  " + "\n  ".join(sorted(problems))
