"""Rules for uploaded files: safe names, accepted extensions, the dataset status table."""

from __future__ import annotations

from studio.errors import Conflict, InvalidInput

ALLOWED_EXTENSIONS = (".jsonl",)
MAX_FILENAME_CHARS = 255

# Allowed dataset status changes. `validating -> validating` renews a validation lease taken over
# from a replica that died mid-validation.
DATASET_TRANSITIONS: dict[str, frozenset[str]] = {
    "uploaded": frozenset({"validating"}),
    "validating": frozenset({"validating", "ready", "invalid"}),
    "ready": frozenset(),
    "invalid": frozenset(),
}


def check_filename(filename: str | None) -> str:
    """Return `filename` if it is a plain file name ending in `.jsonl`.

    Raises:
        InvalidInput: missing, a path (`/`, `\\`, `..`), a NUL or control character, too long, or
            another extension. Nothing about the name is ever used to build a path but its last part.
    """
    if not filename:
        raise InvalidInput("the file has no name", param="file", code="invalid_filename")
    if any(ord(char) < 32 for char in filename) or "\x7f" in filename:
        raise InvalidInput(
            "the file name contains a NUL or control character", param="file", code="invalid_filename"
        )
    if "/" in filename or "\\" in filename or filename in {".", ".."} or filename.startswith(".."):
        raise InvalidInput(
            f"the file name {filename!r} is a path; send a plain file name",
            param="file",
            code="invalid_filename",
        )
    if len(filename) > MAX_FILENAME_CHARS:
        raise InvalidInput(
            f"the file name is longer than {MAX_FILENAME_CHARS} characters",
            param="file",
            code="invalid_filename",
        )
    if not filename.lower().endswith(ALLOWED_EXTENSIONS):
        raise InvalidInput(
            f"the file {filename!r} must be JSON Lines with a .jsonl extension",
            param="file",
            code="invalid_file_extension",
        )
    return filename


def check_dataset_transition(current: str, target: str) -> None:
    """Raise Conflict unless the table allows `current -> target`."""
    if target not in DATASET_TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"a dataset cannot go from {current!r} to {target!r}", code="invalid_status_change")
