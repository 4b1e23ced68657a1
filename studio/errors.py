"""Domain errors. Services raise these; `studio.api.errors` maps each to one HTTP status."""

from __future__ import annotations


class StudioError(Exception):
    """Base of every error Mini Studio reports to a caller.

    `code` is a stable machine-readable string; `param` names the field at fault, when one is.
    """

    code: str = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidInput(StudioError):
    """A value the caller got wrong (`param` names it): 400, as OpenAI answers an invalid field."""

    code = "invalid_input"


class BadRequest(StudioError):
    """A request the server cannot process as a whole (a prompt over the model's context): 400."""

    code = "invalid_request"


class Unauthenticated(StudioError):
    code = "invalid_api_key"


class Forbidden(StudioError):
    code = "forbidden"


class NotFound(StudioError):
    code = "not_found"


class Conflict(StudioError):
    """The resource's state refuses the request (409); the SDK is told not to retry it."""

    code = "conflict"


class PayloadTooLarge(StudioError):
    code = "payload_too_large"


class QuotaExceeded(StudioError):
    """A per-client limit (requests per minute, concurrent jobs, deployments) is reached."""

    code = "quota_exceeded"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: int = 1
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(StudioError):
    """An infrastructure dependency failed; the same request may succeed later."""

    code = "service_unavailable"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: int = 5
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s


# -- storage (issue 11): a client's quota, and the disk guard -------------------------------------


class StorageQuotaExceeded(Forbidden):
    """A write would take a client past a storage quota: 403 (a retry does not help; deleting does).

    `quota` names the limit (`max_stored_bytes`, `max_files`, `max_uploads_in_progress`), `limit` is its
    value and `used` what the client holds now; the message says all three.
    """

    code = "storage_quota_exceeded"

    def __init__(
        self,
        message: str,
        *,
        quota: str,
        limit: int,
        used: int,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.quota = quota
        self.limit = limit
        self.used = used


class InsufficientStorage(Unavailable):
    """The data directory's disk is under its free-space floor: new writes are refused (507, Retry-After)
    so that the database on the same disk keeps working."""

    code = "insufficient_storage"
