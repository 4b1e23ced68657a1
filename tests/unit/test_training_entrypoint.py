"""The entrypoint's pieces in-process: stop request, one-line error messages, the config's new fields."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pydantic import ValidationError

from studio.training import TrainConfig
from studio.training.__main__ import MAX_MESSAGE_CHARS, StopRequest, one_line


def test_a_stop_request_writes_the_stop_file_even_when_it_comes_first(tmp_path: Path) -> None:
    stop_file = tmp_path / "out" / "STOP"
    early = StopRequest()
    early.on_signal(signal.SIGTERM, None)  # before the config named the output folder
    assert early()
    early.watch(stop_file)
    assert stop_file.is_file()

    stop_file.touch()  # left by that run: the next one deletes it and is not stopped by it
    later = StopRequest()
    later.watch(stop_file)
    assert not stop_file.exists() and not later()
    stop_file.touch()  # written by another process (a Ray Train driver's handler)
    assert later()
    stop_file.unlink()
    later.on_signal(signal.SIGTERM, None)
    assert later() and stop_file.is_file()


def test_error_messages_are_one_bounded_line() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig.model_validate(
            {"base_model": "m", "training_file": "t", "output_dir": "o", "lora_target_modules": [], "x": 1}
        )
    assert one_line(caught.value) == (
        "invalid job config: lora_target_modules: Value error, lora_target_modules must name at least "
        "one module; x: Extra inputs are not permitted"
    )
    assert one_line(RuntimeError("first\n  second\tthird")) == "first second third"
    assert one_line(KeyError()) == "KeyError"
    long = one_line(ValueError("x" * 5000))
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("...")


def test_config_names_a_model_or_a_directory_and_sizes_ray_train_runs(tmp_path: Path) -> None:
    common = {"training_file": "t.jsonl", "output_dir": "out"}
    local = TrainConfig.model_validate({"base_model": tmp_path, **common})
    assert local.base_model == str(tmp_path) and local.models_dir is None
    assert (local.num_workers, local.use_gpu, local.cpus_per_worker) == (1, False, 1.0)
    assert not local.uses_ray_train
    named = TrainConfig.model_validate_json(
        '{"base_model": "org/model", "models_dir": "/models", "training_file": "t", "output_dir": "o",'
        ' "num_workers": 2, "cpus_per_worker": 0.5}'
    )
    assert named.base_model == "org/model" and named.models_dir == Path("/models") and named.uses_ray_train
    assert TrainConfig.model_validate({"base_model": "m", "ray_train": True, **common}).uses_ray_train
    for bad in ({"num_workers": 0}, {"cpus_per_worker": 0}, {"base_model": ""}):
        with pytest.raises(ValidationError):
            TrainConfig.model_validate({"base_model": "m", **common, **bad})
