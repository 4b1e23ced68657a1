"""The one error a model server raises to its callers: an HTTP-like status with OpenAI's error fields."""

from __future__ import annotations


class ModelRequestError(Exception):
    """A request the model server refused (`status` 400/404/422) or could not serve (500/503).

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
