"""The one error a model server raises to its callers, and the codes of its refusals on every target.

Both model targets answer a bad request alike: vLLM's OpenAI server (the Kubernetes target) and the Serve
deployment (`studio.serving.server`) refuse an invalid field with 400 naming it in `param`, and the
caller derives the same `code` from status and `param` with `refusal_code`.
"""

from __future__ import annotations

# What vLLM names as the parameter at fault when the prompt does not fit the context.
CONTEXT_PARAMETERS = frozenset({"input_tokens", "input_text"})


def refusal_code(status: int, param: str | None) -> str:
    """Return the error `code` of a model server's 4xx answer: `model_not_found` (404),
    `context_length_exceeded` (OpenAI's code for a prompt over the context), `invalid_value` (a named
    field), else `invalid_request`."""
    if status == 404:
        return "model_not_found"
    if param in CONTEXT_PARAMETERS:
        return "context_length_exceeded"
    return "invalid_value" if param else "invalid_request"


def clean_param(param: str | None) -> str | None:
    """Return the field path of a vLLM error's `param` without the `body.` its HTTP server puts first."""
    if param and param.startswith("body."):
        return param.removeprefix("body.") or None
    return param or None


class ModelRequestError(Exception):
    """A request the model server refused (`status` 400/404) or could not serve (500/503).

    Crosses the Ray boundary (pickled into the caller's `RayTaskError`), so it keeps only plain fields.
    """

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(status, message, type, param)
        self.status = status
        self.message = message
        self.type = type
        self.param = param

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.status, self.message, self.type, self.param))

    def __str__(self) -> str:
        return self.message


def _rebuild(status: int, message: str, type: str, param: str | None) -> ModelRequestError:
    return ModelRequestError(status, message, type=type, param=param)
