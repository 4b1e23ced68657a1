"""A job's `integrations` (Weights & Biases): accepted only when W&B is configured, then handed to its run.

`check_integrations` runs when a job is planned: a job asking for W&B on a Mini Studio without it is a
400 naming the setting to set. `wandb_run` and `wandb_env` are what the tracker gives the training run:
where to log (the job's directory holds an offline run) and, by environment only, the key and server.
"""

from __future__ import annotations

from pathlib import Path

from studio.config import WandbSettings
from studio.errors import InvalidInput
from studio.schemas.jobs import Job, WandbIntegration
from studio.training.config import WandbRun

MODE_SETTING = "STUDIO_WANDB__MODE"
KEY_SETTING = "STUDIO_WANDB__API_KEY"


def check_integrations(integrations: list[WandbIntegration] | None, settings: WandbSettings | None) -> None:
    """Refuse integrations this Mini Studio cannot honour.

    Raises:
        InvalidInput: W&B asked for while it is not configured (`integration_not_configured`, naming
        the missing setting: the mode, or the API key of online mode).
    """
    if not integrations:
        return
    if settings is None or settings.mode is None:
        raise InvalidInput(
            f"Weights & Biases is not configured on this Mini Studio (the operator sets {MODE_SETTING} "
            "to online or offline): remove `integrations`, or ask for it to be configured",
            param="integrations",
            code="integration_not_configured",
        )
    if settings.mode == "online" and settings.api_key is None:
        raise InvalidInput(
            f"Weights & Biases is in online mode without an API key ({KEY_SETTING} is not set): remove "
            "`integrations`, or ask for the key to be configured",
            param="integrations",
            code="integration_not_configured",
        )


def wandb_run(job: Job, settings: WandbSettings | None, *, output_dir: Path) -> WandbRun | None:
    """Return the W&B run of `job`'s training (None: the job asked for none, or W&B is off now)."""
    wandb = next((item.wandb for item in job.integrations if item.type == "wandb"), None)
    if wandb is None or settings is None or settings.mode is None:
        return None
    tags = [*(wandb.tags or []), "mini-studio/finetune", f"mini-studio/{job.id}"]
    return WandbRun(
        project=wandb.project,
        name=wandb.name,
        entity=wandb.entity,
        tags=tuple(tag[:64] for tag in tags),
        mode=settings.mode,
        run_id=job.id,
        directory=output_dir,
    )


def wandb_env(settings: WandbSettings | None) -> dict[str, str]:
    """Return the environment a W&B-logging run needs (the key and server; nothing in its config file)."""
    if settings is None:
        return {}
    env: dict[str, str] = {}
    if settings.api_key is not None:
        env["WANDB_API_KEY"] = settings.api_key.get_secret_value()
    if settings.base_url is not None:
        env["WANDB_BASE_URL"] = settings.base_url
    return env
