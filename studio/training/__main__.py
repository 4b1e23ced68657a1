"""`python -m studio.training --config job.json`: run one training job and stream its events.

Every event is one stdout line `MINISTUDIO_EVENT <json>`, so a supervisor can pick them out of the
job's log (a line may carry a prefix before the marker; the JSON runs to the end of the line):
- `{"type": "metrics", "step", ...}`: one per step (train_loss, learning_rate, tokens_per_second, ...)
  and one per evaluation (valid_loss, valid_mean_token_accuracy);
- `{"type": "checkpoint", "step", "path"}`: a checkpoint was written;
- `{"type": "result", "final_path", "checkpoint_path", "steps", "trained_tokens", "final_train_loss",
  "stopped"}`: the last event of a run that ended (finished, or stopped), with exit code 0;
- `{"type": "warning", "message"}`: something the user should know that did not stop the run (a
  checkpoint skipped for lack of disk space);
- `{"type": "error", "kind": "user" | "platform", "message"}`: the last event of a failed run, with
  exit code 2 (user: bad data, values or model name; the message is for the user) or 1 (platform:
  anything else). The message is one line; stderr has the details (a traceback for platform errors).

Stop: SIGTERM asks the run to stop after the current step and checkpoint (a "result" with stopped
true, exit code 0). The handler also writes `output_dir/STOP`, which Ray Train workers in other
processes poll; nothing else should write that file. A STOP left by an earlier run is deleted at
start, so a rerun on the same output_dir (a resume) trains instead of stopping at once.

`base_model` may be a name: it is resolved to a local directory first (`studio.training.models`).
With `remote` set, a node that lacks the config file, a dataset or the shared output folder reads them
from the environment and S3 and uploads its artifacts there (`studio.training.remote_files`).
With `ray_train` set or `num_workers > 1` the run goes through Ray Train (`studio.training.ray_train`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

if TYPE_CHECKING:
    from studio.training.config import TrainConfig, TrainResult

EVENT_PREFIX = "MINISTUDIO_EVENT "
EXIT_OK, EXIT_PLATFORM_ERROR, EXIT_USER_ERROR = 0, 1, 2
MAX_MESSAGE_CHARS = 2000


def emit(event: dict[str, Any]) -> None:
    """Write one event line to stdout and flush it, so the supervisor sees it at once."""
    # sys.stdout.write, not print: Ray Train patches print in its workers to go through logging.
    sys.stdout.write(EVENT_PREFIX + json.dumps(event, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def one_line(exc: BaseException) -> str:
    """Return `exc` as one line of at most MAX_MESSAGE_CHARS (validation errors as `field: message`)."""
    if isinstance(exc, ValidationError):
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors()
        )
        text = f"invalid job config: {fields}"
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def emit_error(kind: Literal["user", "platform"], exc: BaseException) -> None:
    """Emit the error event of a failed run."""
    emit({"type": "error", "kind": kind, "message": one_line(exc)})


def emit_result(result: TrainResult) -> None:
    """Emit the result event of a run that finished or stopped."""
    emit({
        "type": "result",
        "final_path": str(result.final_path) if result.final_path else None,
        "checkpoint_path": str(result.checkpoint_path) if result.checkpoint_path else None,
        "steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "final_train_loss": result.final_train_loss,
        "stopped": result.stopped,
        **({"final_uri": result.final_uri} if result.final_uri else {}),
    })  # fmt: skip


class StopRequest:
    """Set by SIGTERM; also true once `output_dir/STOP` exists (the file other processes poll)."""

    def __init__(self) -> None:
        self.requested = False
        self.stop_file: Path | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Record the request and write the STOP file (signal handler)."""
        self.requested = True
        self._write()

    def watch(self, stop_file: Path) -> None:
        """Delete a STOP file left by an earlier run; from now on a request also writes `stop_file`."""
        stop_file.unlink(missing_ok=True)
        self.stop_file = stop_file
        if self.requested:  # the signal came before the output folder was known
            self._write()

    def __call__(self) -> bool:
        """Return True when a stop was requested by signal or by the STOP file."""
        return self.requested or (self.stop_file is not None and self.stop_file.exists())

    def _write(self) -> None:
        if self.stop_file is not None:
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()


def run(config_path: Path, stop: StopRequest) -> TrainResult:
    """Load the job at `config_path`, resolve its base model and train it; return the result.

    Raises:
        ValueError: the config, data, values or model name are the user's mistake.
        Exception: anything else is the platform's (OSError: the model hub is unreachable, ...).
    """
    # Imported here so that a bad config is reported before torch and transformers load.
    from studio.training.config import STOP_FILE, TrainConfig
    from studio.training.remote_files import localize, read_config_text

    config = TrainConfig.model_validate_json(read_config_text(config_path))
    config, uploader = localize(config)  # a node without the shared data folder: S3 instead
    stop.watch(config.output_dir / STOP_FILE)
    from studio.training.loop import disable_progress_bars
    from studio.training.models import resolve_base_model

    disable_progress_bars()
    base_model = resolve_base_model(config.base_model, config.models_dir)
    config = config.model_copy(update={"base_model": str(base_model)})
    if uploader is None:
        return _train(config, stop, emit)
    result = _train(config, stop, uploader.wrap(emit))
    if result.final_path is None:
        return result
    return dataclasses.replace(result, final_uri=uploader.upload_final(result.final_path))


def _train(config: TrainConfig, stop: StopRequest, report: Callable[[dict[str, Any]], None]) -> TrainResult:
    if config.uses_ray_train:
        from studio.training.ray_train import fit

        return fit(config, report=report)
    from studio.training.loop import train

    return train(config, report=report, should_stop=stop)


def main(argv: list[str] | None = None) -> int:
    """Run the job described by `--config`; return the process exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(prog="python -m studio.training", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="a TrainConfig as JSON")
    args = parser.parse_args(argv)
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop.on_signal)
    try:
        result = run(args.config, stop)
    except ValueError as exc:  # includes pydantic's ValidationError and JSON errors: the user's input
        print(f"error: {exc}", file=sys.stderr, flush=True)
        emit_error("user", exc)
        return EXIT_USER_ERROR
    except Exception as exc:
        traceback.print_exc()
        sys.stderr.flush()
        emit_error("platform", exc)
        return EXIT_PLATFORM_ERROR
    emit_result(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
