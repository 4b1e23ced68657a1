"""A run on a node that does not see the head's data directory: datasets from S3, artifacts to S3.

How the trainer tells (a config with `remote` set; see `TrainConfig.remote`):
- a dataset whose local path is missing on this node is fetched from its S3 mirror into the node's
  cache (`$STUDIO_NODE_CACHE_DIR`, else `<tmp>/mini-studio-node-cache`) under `datasets/<bucket>/<key>`,
  once: a dataset's key names its id, so a cached copy never goes stale;
- when the parent of `output_dir` (the head's `jobs/` folder) is missing, the run writes under
  `<cache>/jobs/<job>/` instead, resumes from the latest complete checkpoint under `<output>/checkpoints/`
  in S3 when it has none on disk, uploads each checkpoint as it is written (the checkpoint event then
  carries its `uri`) and its final model to `<output>/final` (the result event's `final_uri`); a
  `models_dir` missing too becomes `<cache>/models`.
A node that sees the shared folder trains exactly as without `remote`.

The config itself reaches such a node through `STUDIO_TRAIN_CONFIG` (its JSON) when the `--config` file
is missing there (`read_config_text`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.training.config import CONFIG_ENV, STATE_FILE, TrainConfig, latest_checkpoint
from studio.training.s3_objects import (
    S3Location,
    download_file,
    download_folder,
    keys_under,
    s3_client,
    upload_folder,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

NODE_CACHE_ENV = "STUDIO_NODE_CACHE_DIR"
_STEP_DIR = re.compile(r"^checkpoints/step-(\d+)/" + re.escape(STATE_FILE) + "$")

Report = Callable[[dict[str, Any]], None]


def node_cache_dir() -> Path:
    """Return this node's cache folder: `$STUDIO_NODE_CACHE_DIR`, else one under the temp directory."""
    value = os.environ.get(NODE_CACHE_ENV)
    return Path(value) if value else Path(tempfile.gettempdir()) / "mini-studio-node-cache"


def read_config_text(path: Path) -> str:
    """Return the run's config as JSON: the file at `path`, or `$STUDIO_TRAIN_CONFIG` where `path` is missing.

    Raises:
        FileNotFoundError: neither is there.
    """
    if not path.exists() and os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    return path.read_text(encoding="utf-8")


class ArtifactUploader:
    """Uploads a run's checkpoints and final model to its S3 folder (rank 0's process only)."""

    def __init__(self, client: S3Client, output: S3Location) -> None:
        self._client = client
        self._output = output

    def wrap(self, report: Report) -> Report:
        """Return `report` with each checkpoint uploaded before its event goes out (with its `uri`).

        A checkpoint that cannot be uploaded (S3 down, or written on another node by a Ray Train rank)
        is reported as a warning event: the run goes on, and a retry resumes from an earlier one.
        """

        def relay(event: dict[str, Any]) -> None:
            path = Path(str(event.get("path") or ""))
            if event.get("type") == "checkpoint" and path.parts:
                try:
                    if not path.is_dir():
                        raise FileNotFoundError(f"{path} is not on this node")
                    target = self._output.child(f"checkpoints/{path.name}")
                    event = {**event, "uri": upload_folder(self._client, path, target, marker=STATE_FILE)}
                except Exception as exc:  # the run goes on: the checkpoint stays on this node's disk
                    log.warning("uploading checkpoint %s failed", path, exc_info=True)
                    report(
                        {"type": "warning", "message": f"Checkpoint {path.name} was not copied to S3: {exc}"}
                    )
            report(event)

        return relay

    def upload_final(self, final: Path) -> str:
        """Upload the final model folder to `<output>/final`; return its URI. Raises botocore's errors."""
        return upload_folder(self._client, final, self._output.child("final"))


def localize(config: TrainConfig) -> tuple[TrainConfig, ArtifactUploader | None]:
    """Return `config` with what this node lacks fetched from or redirected to S3, and the uploader of
    its artifacts (None: the run writes to the shared `output_dir` as usual).

    Raises:
        FileNotFoundError: a dataset is neither on this node nor in S3.
        botocore's errors: S3 is unreachable or refuses the credentials.
    """
    remote = config.remote
    if remote is None:
        return config, None
    cache = node_cache_dir()
    client = s3_client(endpoint_url=remote.endpoint_url, region=remote.region, timeout_s=remote.timeout_s)
    updates: dict[str, Any] = {}
    for field, uri in (("training_file", remote.training_file), ("validation_file", remote.validation_file)):
        local: Path | None = getattr(config, field)
        if local is None or local.exists() or uri is None:
            continue
        source = S3Location.parse(uri)
        cached = cache / "datasets" / source.bucket / source.key
        updates[field] = cached if cached.is_file() else download_file(client, source, cached)
    if config.output_dir.parent.is_dir():
        return config.model_copy(update=updates), None
    output_dir = cache / "jobs" / config.output_dir.name
    # It exists before training starts, as the tracker's folder (holding config.json) does: the disk
    # guard measures the disk it is on before the first checkpoint.
    output_dir.mkdir(parents=True, exist_ok=True)
    output = S3Location.parse(remote.output)
    updates["output_dir"] = output_dir
    if config.models_dir is not None and not config.models_dir.is_dir():
        updates["models_dir"] = cache / "models"
    if config.wandb is not None and not config.wandb.directory.is_dir():
        updates["wandb"] = config.wandb.model_copy(update={"directory": output_dir})
    _restore_latest_checkpoint(client, output, output_dir / "checkpoints")
    return config.model_copy(update=updates), ArtifactUploader(client, output)


def _restore_latest_checkpoint(client: S3Client, output: S3Location, checkpoints: Path) -> Path | None:
    """Download the latest complete checkpoint in S3 when this node has none; return it (None: none)."""
    if latest_checkpoint(checkpoints) is not None:
        return None
    steps = [int(m[1]) for key in keys_under(client, output) if (m := _STEP_DIR.match(key))]
    if not steps:
        return None
    name = f"step-{max(steps)}"
    return download_folder(client, output.child(f"checkpoints/{name}"), checkpoints / name, marker=STATE_FILE)
