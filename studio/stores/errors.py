"""Translation of driver errors into domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, PyMongoError

from studio.errors import Conflict, Unavailable


@contextmanager
def mongo_errors() -> Iterator[None]:
    """Translate driver errors: connection trouble -> Unavailable (503), duplicate key -> Conflict."""
    try:
        yield
    except DuplicateKeyError as exc:
        raise Conflict("an object with the same unique fields already exists", code="duplicate") from exc
    except (ConnectionFailure, ExecutionTimeout) as exc:
        raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
    except PyMongoError as exc:
        if exc.timeout:
            raise Unavailable("database operation timed out") from exc
        raise
