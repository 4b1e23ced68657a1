"""`python -m studio.training --config job.json`: run one training job and stream its events.

Each report of `train` is printed to stdout as one line `MINISTUDIO_EVENT <json>`, and the outcome
as a last event of type "result", so a supervisor can pick them out of the job's log. Exit codes:
0 success (finished or stopped), 2 user error (bad data or hyperparameters; the message is on
stderr), 1 anything else. SIGTERM asks the loop to stop after the current step and checkpoint.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

EVENT_PREFIX = "MINISTUDIO_EVENT "
EXIT_OK, EXIT_PLATFORM_ERROR, EXIT_USER_ERROR = 0, 1, 2


def emit(event: dict[str, Any]) -> None:
    """Print one event line to stdout and flush it, so the supervisor sees it at once."""
    print(EVENT_PREFIX + json.dumps(event, ensure_ascii=False, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the job described by `--config`; return the process exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(prog="python -m studio.training", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="a TrainConfig as JSON")
    args = parser.parse_args(argv)
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        # Imported here so that a bad config is reported before torch and transformers load.
        from studio.training.config import TrainConfig

        config = TrainConfig.model_validate_json(args.config.read_text(encoding="utf-8"))
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # they would flood the job log
        from studio.training.loop import train

        result = train(config, report=emit, should_stop=lambda: stop_requested)
    except ValueError as exc:  # includes pydantic's ValidationError and JSON errors: the user's input
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc()
        return EXIT_PLATFORM_ERROR
    emit({
        "type": "result",
        "final_path": str(result.final_path) if result.final_path else None,
        "checkpoint_path": str(result.checkpoint_path) if result.checkpoint_path else None,
        "steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "final_train_loss": result.final_train_loss,
        "stopped": result.stopped,
    })  # fmt: skip
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
