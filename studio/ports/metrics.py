"""What Mini Studio counts for Prometheus."""

from __future__ import annotations

from typing import Protocol


class StudioMetrics(Protocol):
    """Mini Studio's own figures for Prometheus: jobs, training tokens, inference, uploads, API errors.

    Every call is cheap, never blocks and never raises: a figure lost is better than a request failed.
    Tags stay of bounded cardinality: model names and client ids, never request or job ids.
    """

    def jobs_in_status(self, counts: dict[str, int]) -> None:
        """Set how many jobs are in each status the tracker follows (`validating_files`, `queued`,
        `running`), as its last round found them."""
        ...

    def job_ended(self, *, status: str, model: str, client_id: str) -> None:
        """Count a job that reached a final status (`succeeded`, `failed`, `cancelled`)."""
        ...

    def job_launched(self, *, model: str, client_id: str, queued_s: float) -> None:
        """Record that a job's first run was launched `queued_s` seconds after the job was created."""
        ...

    def tokens_trained(self, *, model: str, client_id: str, tokens: int) -> None:
        """Count `tokens` more trained tokens of a job on the base model `model`."""
        ...

    def inference_request(self, *, model: str, client_id: str, kind: str, stream: bool, outcome: str) -> None:
        """Count one inference request (`kind`: chat or completion; `outcome`: ok or error)."""
        ...

    def inference_tokens(self, *, model: str, client_id: str, prompt: int, completion: int) -> None:
        """Count the prompt and completion tokens of an answer (from its `usage`)."""
        ...

    def time_to_first_token(self, *, model: str, client_id: str, seconds: float) -> None:
        """Record the time from a streaming request's arrival to its first chunk from the model."""
        ...

    def uploaded_bytes(self, *, client_id: str, size: int) -> None:
        """Count `size` bytes of a client's file (or upload part) written to the data directory."""
        ...

    def api_error(self, *, status: int, code: str | None) -> None:
        """Count one error answer of the API, by HTTP status and OpenAI error `code`."""
        ...
