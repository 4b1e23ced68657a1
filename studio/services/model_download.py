"""Take-away models: a client's fine-tuned model as a tar it can load elsewhere (vLLM, transformers).

`GET /v1/models/{id}/content` streams the job's final directory: for a LoRA fine-tune the adapter
(safetensors, `adapter_config.json`, the tokenizer), for a full fine-tune the model itself. With
`format=merged` a LoRA fine-tune comes as base + adapter merged into full safetensors: merged once (in
a Ray task, see `studio.backends.model_files`), cached in the job's directory beside `final/` (removed
with the model by `DELETE /v1/models/{id}`), and sent from there on every later download.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from studio.domain.jobs import parse_fine_tuned_model_name
from studio.errors import InvalidInput, NotFound, Unavailable
from studio.ports import BaseModelRepository, JobRepository, ObjectStore
from studio.schemas.clients import Client
from studio.schemas.jobs import Job

DownloadFormat = Literal["adapter", "merged"]
MERGED_DIR = "merged"
TAR_MEDIA_TYPE = "application/x-tar"


class DirectoryArchiver(Protocol):
    """A directory as a tar stream; implemented by `studio.backends.model_files.TarDirectoryArchiver`."""

    async def archive(self, directory: str, *, root: str) -> tuple[int, AsyncIterator[bytes]]:
        """Return the tar's size and its bytes (members under `root/`). Raises NotFound: no files."""
        ...


class AdapterMerger(Protocol):
    """Merges a LoRA adapter into its base; implemented by `studio.backends.model_files.RayAdapterMerger`."""

    async def merge(self, *, base_model: str, adapter_dir: str, output_dir: str) -> None:
        """Write the merged model to `output_dir` unless it is there. Raises Unavailable: it failed."""
        ...


@dataclass(frozen=True, slots=True)
class ModelArchive:
    """One download: its file name, media type, size in bytes and content, streamed."""

    filename: str
    media_type: str
    size: int
    chunks: AsyncIterator[bytes]


def archive_name(model_id: str, *, merged: bool) -> str:
    """Return the download's name: the model id with characters unsafe in file names as `-`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.") or "model"
    return f"{stem}-merged" if merged else stem


class ModelDownloads:
    """Streams a client's fine-tuned models (owner only; another client's model is not found)."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        base_models: BaseModelRepository,
        archiver: DirectoryArchiver,
        merger: AdapterMerger | None,
        objects: ObjectStore | None = None,
        jobs_dir: Path | None = None,
    ) -> None:
        """`objects` and `jobs_dir`: a model trained on a node without the data directory has its files
        only in S3 (`output_model_uri`); its first download copies them to `<jobs_dir>/<job id>/final`."""
        self._objects = objects
        self._jobs_dir = jobs_dir
        self._jobs = jobs
        self._base_models = base_models
        self._archiver = archiver
        self._merger = merger
        # One merge per job at a time in this replica; a second download waits for the first's.
        self._merging: dict[str, asyncio.Lock] = {}

    async def open(self, client: Client, model_id: str, *, format: DownloadFormat | None) -> ModelArchive:
        """Return the download of the client's fine-tuned model `model_id` as a tar.

        `format`: None (the adapter of a LoRA fine-tune, the model of a full one), "adapter" (LoRA
        only) or "merged" (full weights; a full fine-tune's own).

        Raises:
            NotFound: no such fine-tuned model of this client (a base model is not downloadable), or
            its files are gone from the disk. InvalidInput: "adapter" asked of a full fine-tune.
            Unavailable: merging is not available here, or failed or timed out.
        """
        job = await self._job(client, model_id)
        final = job.output_model_path
        if final is None:
            raise NotFound(f"the model {model_id!r} has no weights on disk", code="model_files_missing")
        lora = job.hyperparameters.fine_tuning_method == "lora"
        if format == "adapter" and not lora:
            raise InvalidInput(
                f"{model_id!r} is a full fine-tune: it has no adapter; download it without `format` "
                "(or with format=merged)",
                param="format",
                code="invalid_format",
            )
        merged = format == "merged" and lora
        name = archive_name(model_id, merged=merged)
        try:
            directory = await self._merged(job, final) if merged else final
            size, chunks = await self._archiver.archive(directory, root=name)
        except NotFound as exc:
            if exc.code != "model_files_missing":
                raise
            final = await self._from_s3(job)  # the run wrote its model on a node of its own
            directory = await self._merged(job, final) if merged else final
            size, chunks = await self._archiver.archive(directory, root=name)
        return ModelArchive(filename=f"{name}.tar", media_type=TAR_MEDIA_TYPE, size=size, chunks=chunks)

    async def _from_s3(self, job: Job) -> str:
        """Copy the job's final model from its S3 copy to the data directory once; return that folder.

        Raises:
            NotFound: no S3 copy (or no S3 here): the model's files are gone.
        """
        uri, objects, root = job.output_model_uri, self._objects, self._jobs_dir
        if uri is None or objects is None or root is None or not uri.startswith(f"s3://{objects.bucket}/"):
            raise NotFound(
                f"the model {job.fine_tuned_model!r} has no files left", code="model_files_missing"
            )
        target = root / job.id / "final"
        async with self._merging.setdefault(job.id, asyncio.Lock()):  # one copy per job at a time
            if not await asyncio.to_thread(target.is_dir):
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                await objects.get_directory(prefix=uri.removeprefix(f"s3://{objects.bucket}/"), path=target)
        return str(target)

    async def _job(self, client: Client, model_id: str) -> Job:
        parsed = parse_fine_tuned_model_name(model_id)
        job = None if parsed is None else await self._jobs.get(client_id=client.id, job_id=parsed[3])
        if job is None or job.fine_tuned_model != model_id or job.model_deleted_at is not None:
            raise NotFound(
                f"the fine-tuned model {model_id!r} does not exist", param="model", code="model_not_found"
            )
        return job

    async def _merged(self, job: Job, adapter_dir: str) -> str:
        """Return the directory of the job's merged model, merging it first when it is not cached."""
        if self._merger is None:
            raise Unavailable("merging adapters is not available here (no Ray cluster)")
        base = await self._base_models.get(job.model)
        if base is None:
            raise NotFound(
                f"the base model {job.model!r} of this fine-tune is no longer registered: the adapter "
                "cannot be merged (download it without format=merged)",
                param="format",
                code="base_model_not_found",
            )
        output = posixpath.join(posixpath.dirname(adapter_dir.rstrip("/")), MERGED_DIR)
        # A lock per merged job, kept (a few bytes each): merged models are few and stay cached.
        async with self._merging.setdefault(job.id, asyncio.Lock()):
            await self._merger.merge(base_model=base.source, adapter_dir=adapter_dir, output_dir=output)
        return output
