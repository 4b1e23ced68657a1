"""Turn a job's `base_model` (a local directory or a model name) into a local model directory.

Three kinds of names, tried in this order:
- an existing local directory: used as it is;
- `mini-studio/tiny-llama`: built on the spot under `models_dir/tiny-llama` (see `tiny_model`);
- anything else: a Hugging Face hub id, downloaded (or found already downloaded) under
  `models_dir/hub`, the hub's usual cache layout, or the default hub cache when `models_dir` is None.

Errors are split the way the entrypoint reports them: a name the hub does not know (or refuses to
serve) is the user's ValueError; a hub that cannot be reached while the model is not cached is the
platform's OSError.
"""

from __future__ import annotations

from pathlib import Path

from studio.training.tiny_model import TINY_MODEL_NAME, ensure_tiny_model

TINY_MODEL_DIR = "tiny-llama"
HUB_CACHE_DIR = "hub"


def resolve_base_model(name: str, models_dir: Path | None) -> Path:
    """Return the absolute local directory holding the model `name`, creating or downloading it if needed.

    Concurrent callers are safe: the tiny model is built in a temporary directory and renamed into
    place, and the hub client locks each file it downloads.

    Raises:
        ValueError: `name` is a directory without config.json, neither a directory nor a valid hub
            id, or a model the hub does not have (or one gated or private that no token opens).
        OSError: the hub cannot be reached (or offline mode is on) and the model is not cached, or
            a download failed on the hub's side.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ValueError(f"base model directory {name} has no config.json: it is not a model")
        return local.resolve()
    if name == TINY_MODEL_NAME:
        base = models_dir if models_dir is not None else Path.home() / ".cache" / "mini-studio" / "models"
        return ensure_tiny_model(base / TINY_MODEL_DIR).resolve()
    return _download(name, models_dir / HUB_CACHE_DIR if models_dir is not None else None)


def _download(repo_id: str, cache_dir: Path | None) -> Path:
    """Return the local snapshot of the hub model `repo_id`, downloading what is missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir)).resolve()
    except HFValidationError as exc:
        raise ValueError(
            f"base model {repo_id!r} is not a local directory, {TINY_MODEL_NAME!r} "
            f"or a valid Hugging Face model id ({exc})"
        ) from exc
    except GatedRepoError as exc:  # before RepositoryNotFoundError, of which it is a subclass
        raise ValueError(f"base model {repo_id!r} is gated on the Hugging Face hub: no access") from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ValueError(
            f"base model {repo_id!r} is not a local directory and the Hugging Face hub has no such model"
        ) from exc
    except LocalEntryNotFoundError as exc:
        where = cache_dir or "the default Hugging Face cache"
        raise OSError(
            f"base model {repo_id!r} is not in {where} and the Hugging Face hub cannot be reached"
            " (offline mode or no connection)"
        ) from exc
    except HfHubHTTPError as exc:
        raise OSError(f"downloading base model {repo_id!r} from the Hugging Face hub failed: {exc}") from exc
