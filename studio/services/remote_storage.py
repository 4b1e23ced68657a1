"""What a training run needs to work on a node without the head's data directory: S3 locations and keys.

With S3 configured, every run's config names the S3 mirror of its datasets and the S3 folder of its
outputs (`s3://<bucket>/<client>/jobs/<job id>`, the layout the tracker copies to), and its launch gets
the S3 credentials as environment variables (never written into the config file on disk) and the
config's JSON (`STUDIO_TRAIN_CONFIG`), so a node that sees none of the head's files can still train.
Whether a run needs them is the trainer's call, made on its node (`studio.training.remote_files`).
"""

from __future__ import annotations

from studio.config import S3Settings
from studio.schemas.datasets import Dataset
from studio.training.config import CONFIG_ENV, RemoteStorage, TrainConfig


def mirrored_uri(dataset: Dataset | None) -> str | None:
    """Return the dataset's S3 URI once its copy there is complete, else None."""
    if dataset is None or dataset.s3.state != "mirrored":
        return None
    return dataset.s3.uri


def remote_storage(
    s3: S3Settings | None, *, client_id: str, job_id: str, training: str | None, validation: str | None
) -> RemoteStorage | None:
    """Return the run's S3 locations (None: no S3 configured)."""
    if s3 is None or s3.bucket is None:
        return None
    return RemoteStorage(
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        timeout_s=s3.timeout_s,
        training_file=training,
        validation_file=validation,
        output=f"s3://{s3.bucket}/{client_id}/jobs/{job_id}",
    )


def remote_env(s3: S3Settings | None, config: TrainConfig) -> dict[str, str]:
    """Return the launch's environment for `config.remote`: S3 credentials and the config's JSON."""
    if s3 is None or config.remote is None:
        return {}
    return {CONFIG_ENV: config.model_dump_json(), **credentials_env(s3)}


def credentials_env(s3: S3Settings) -> dict[str, str]:
    """Return the S3 keys as boto3 reads them from the environment (none set: boto3's default chain on
    the node applies, an instance profile say). Runs and model servers get them this way."""
    env = {}
    if s3.access_key_id is not None:
        env["AWS_ACCESS_KEY_ID"] = s3.access_key_id.get_secret_value()
    if s3.secret_access_key is not None:
        env["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key.get_secret_value()
    return env
