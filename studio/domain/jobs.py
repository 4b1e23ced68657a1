"""The fine-tuning job state machine and the naming of fine-tuned models.

Every status change goes through `check_job_transition`; the store writes it as a conditional update
on the expected old status, so two writers (a tracking actor and a cancel request) cannot race.
"""

from __future__ import annotations

import re
from typing import Literal

from studio.errors import Conflict, InvalidInput

LauncherKind = Literal["jobs_api", "actor"]
LaunchMode = Literal["auto", "jobs_api", "actor"]
# Runs started by the Ray actor launcher (the Jobs API's fallback) carry this prefix in their id;
# Jobs API submission ids carry none, as they always have.
ACTOR_ID_PREFIX = "actor:"

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
ErrorKind = Literal["user", "platform"]

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"validating_files", "queued", "running"})

# FROM -> allowed TO. `running -> queued` is a retry after a platform failure (from the last
# checkpoint); `running -> running` records a new attempt's Ray job id.
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"running", "queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def check_job_transition(current: str, target: str) -> None:
    """Raise Conflict unless the table allows `current -> target`."""
    if target not in JOB_TRANSITIONS.get(current, frozenset()):
        if current in TERMINAL:
            raise Conflict(f"the job already {current}", code="job_finished")
        raise Conflict(f"a job cannot go from {current!r} to {target!r}", code="invalid_status_change")


def check_suffix(suffix: str | None) -> str | None:
    """Return the suffix if it is 1-40 letters, digits, `-` or `_`.

    Raises:
        InvalidInput: naming the `suffix` field.
    """
    if suffix is not None and not _SUFFIX.match(suffix):
        raise InvalidInput(
            "suffix must be 1-40 letters, digits, '-' or '_'", param="suffix", code="invalid_suffix"
        )
    return suffix


def fine_tuned_model_name(*, base_model: str, client_id: str, suffix: str | None, job_id: str) -> str:
    """Return `ft:<base>:<client>:<suffix>:<job id>` (OpenAI's shape; the suffix part may be empty)."""
    return f"ft:{base_model}:{client_id}:{suffix or ''}:{job_id}"


def parse_fine_tuned_model_name(name: str) -> tuple[str, str, str, str] | None:
    """Return (base, client, suffix, job id) of an `ft:` name, or None when `name` is not one."""
    if not name.startswith("ft:"):
        return None
    parts = name[3:].rsplit(":", 3)
    if len(parts) != 4 or not all(parts[i] for i in (0, 1, 3)):
        return None
    return parts[0], parts[1], parts[2], parts[3]


# Learning rates that `learning_rate_multiplier` scales: LoRA adapters start from zero and take a larger
# step than a full fine-tune, which moves every pretrained weight.
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}
DEFAULT_EPOCHS = 3
MAX_AUTO_BATCH = 32


def auto_epochs(rows: int) -> int:
    """Return the epochs "auto" means: 3, more for tiny datasets (about 100 examples seen in all, max 10)."""
    if rows <= 0:
        return DEFAULT_EPOCHS
    return max(DEFAULT_EPOCHS, min(10, -(-100 // rows)))


def auto_batch_size(rows: int) -> int:
    """Return the batch size "auto" means: about 0.2% of the examples, between 1 and 32, a power of two."""
    target = max(1, min(MAX_AUTO_BATCH, rows // 500))
    return 1 << (target.bit_length() - 1)


def learning_rate(method: str, multiplier: float) -> float:
    """Return the optimizer's peak learning rate for `method` scaled by `multiplier`."""
    return BASE_LEARNING_RATE[method] * multiplier


def classify_exit(message: str | None) -> ErrorKind:
    """Tell a user error from a platform error by the training process's exit code in Ray's message.

    The entrypoint exits 2 for a user error (bad data or hyperparameters); anything else (1, a signal,
    a lost node) is the platform's.
    """
    return "user" if message and re.search(r"exit code 2\b", message) else "platform"


def launcher_of(launch_id: str) -> LauncherKind:
    """Return which launcher started the run `launch_id`: the Jobs API, or a Ray actor (the fallback)."""
    return "actor" if launch_id.startswith(ACTOR_ID_PREFIX) else "jobs_api"
