"""Datasets (OpenAI "files" with purpose fine-tune): stored documents and the two wire dialects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from studio.domain.datasets import DatasetFormat, DatasetStats, LineIssue

DatasetStatus = Literal["uploaded", "validating", "ready", "invalid"]
MirrorState = Literal["disabled", "pending", "mirrored"]
Purpose = Literal["fine-tune"]
# What a stored file is for: training data, or a job's step-metrics CSV (OpenAI's `fine-tune-results`).
FilePurpose = Literal["fine-tune", "fine-tune-results"]
ListOrder = Literal["asc", "desc"]


class S3Mirror(BaseModel):
    """Where the S3 copy stands. `pending` is retried with backoff until it is `mirrored`."""

    state: MirrorState
    uri: str | None = None
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float | None = None


class Dataset(BaseModel):
    """A dataset as stored in `fine_tuning_datasets` (`_id` = `id`)."""

    id: str
    client_id: str
    filename: str
    purpose: FilePurpose = "fine-tune"
    bytes: int
    sha256: str
    status: DatasetStatus
    format: DatasetFormat | None = None
    error_count: int = 0
    errors: list[LineIssue] = Field(default_factory=list)
    warnings: list[LineIssue] = Field(default_factory=list)
    stats: DatasetStats | None = None
    local_path: str
    s3: S3Mirror
    # The base model whose tokenizer counts this dataset's tokens (None: the estimate).
    tokenizer: str | None = None
    lease_until: float | None = None
    created_at: int
    validated_at: int | None = None
    # Set by the storage sweeper when the file is not on disk (the record is kept, not deleted).
    missing_since: int | None = None


class FileDetails(BaseModel):
    """Mini Studio's additions to OpenAI's file object."""

    validation_status: DatasetStatus
    format: DatasetFormat | None
    error_count: int
    errors: list[LineIssue]
    warnings: list[LineIssue]
    stats: DatasetStats | None
    sha256: str
    s3: S3Mirror
    # When the storage sweeper found the file's bytes missing from disk (None: present).
    missing_since: int | None = None


class FilePublic(BaseModel):
    """OpenAI's file object, plus Mini Studio's validation report under `details`."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None
    details: FileDetails

    @classmethod
    def of(cls, dataset: Dataset) -> FilePublic:
        status: Literal["uploaded", "processed", "error"] = "uploaded"
        detail = None
        if dataset.status == "ready":
            status = "processed"
        elif dataset.status == "invalid":
            status = "error"
            detail = f"{dataset.error_count} error(s)"
            if dataset.errors:
                first = dataset.errors[0]
                where = f" on line {first.line}" if first.line else ""
                detail += f"; first{where}: {first.message}"
        return cls(
            id=dataset.id,
            bytes=dataset.bytes,
            created_at=dataset.created_at,
            filename=dataset.filename,
            purpose=dataset.purpose,
            status=status,
            status_details=detail,
            details=FileDetails(
                validation_status=dataset.status,
                format=dataset.format,
                error_count=dataset.error_count,
                errors=dataset.errors,
                warnings=dataset.warnings,
                stats=dataset.stats,
                sha256=dataset.sha256,
                s3=dataset.s3,
                missing_since=dataset.missing_since,
            ),
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class DatasetPublic(BaseModel):
    """The original design's dataset response (`/fine_tuning/upload-dataset`, `/fine_tuning/datasets`)."""

    dataset_id: str
    filename: str
    bytes: int
    sha256: str
    status: DatasetStatus
    format: DatasetFormat | None
    error_count: int
    errors: list[LineIssue]
    warnings: list[LineIssue]
    stats: DatasetStats | None
    s3_uri: str | None
    s3_status: MirrorState
    created_at: int

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetPublic:
        return cls(
            dataset_id=dataset.id,
            filename=dataset.filename,
            bytes=dataset.bytes,
            sha256=dataset.sha256,
            status=dataset.status,
            format=dataset.format,
            error_count=dataset.error_count,
            errors=dataset.errors,
            warnings=dataset.warnings,
            stats=dataset.stats,
            s3_uri=dataset.s3.uri,
            s3_status=dataset.s3.state,
            created_at=dataset.created_at,
        )


class DatasetPreview(BaseModel):
    object: Literal["dataset.preview"] = "dataset.preview"
    id: str
    rows: list[Any]
    truncated: bool


class UploadCreate(BaseModel):
    """Body of `POST /v1/uploads` (OpenAI's Uploads API)."""

    model_config = {"extra": "forbid"}

    filename: str = Field(min_length=1, max_length=255)
    purpose: Purpose
    bytes: int = Field(ge=1)
    mime_type: str = Field(default="application/jsonl", max_length=200)


class UploadPart(BaseModel):
    id: str
    upload_id: str
    bytes: int
    created_at: int
    object: Literal["upload.part"] = "upload.part"


class Upload(BaseModel):
    """An upload in progress, as stored in `uploads`."""

    id: str
    client_id: str
    filename: str
    purpose: Purpose
    bytes: int
    mime_type: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    parts: list[UploadPart] = Field(default_factory=list)
    created_at: int
    expires_at: int
    file_id: str | None = None


class UploadComplete(BaseModel):
    """Body of `POST /v1/uploads/{id}/complete`."""

    model_config = {"extra": "forbid"}

    part_ids: list[str] = Field(min_length=1, max_length=10_000)
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")


class UploadPublic(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    expires_at: int
    file: FilePublic | None = None

    @classmethod
    def of(cls, upload: Upload, file: FilePublic | None = None) -> UploadPublic:
        return cls(
            id=upload.id,
            bytes=upload.bytes,
            created_at=upload.created_at,
            filename=upload.filename,
            purpose=upload.purpose,
            status=upload.status,
            expires_at=upload.expires_at,
            file=file,
        )


class UploadPartPublic(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def of(cls, part: UploadPart) -> UploadPartPublic:
        return cls(id=part.id, created_at=part.created_at, upload_id=part.upload_id)
