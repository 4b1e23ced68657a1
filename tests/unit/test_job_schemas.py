"""The fine-tuning job create body: OpenAI's two hyperparameter spellings, bounds, unknown fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from studio.schemas.jobs import JobCreate


def test_legacy_and_method_spellings_resolve_alike() -> None:
    legacy = JobCreate.model_validate(
        {"model": "m", "training_file": "file-1", "hyperparameters": {"n_epochs": 3, "batch_size": "auto"}}
    )
    method = JobCreate.model_validate(
        {
            "model": "m",
            "training_file": "file-1",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        }
    )
    assert legacy.resolved_hyperparameters() == method.resolved_hyperparameters()
    assert legacy.resolved_hyperparameters().n_epochs == 3
    assert JobCreate(model="m", training_file="f").resolved_hyperparameters().n_epochs == "auto"


def test_both_spellings_at_once_are_refused() -> None:
    with pytest.raises(ValidationError, match="either at the top level"):
        JobCreate.model_validate(
            {"model": "m", "training_file": "f", "hyperparameters": {}, "method": {"type": "supervised"}}
        )


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"n_epochs": 0}, "n_epochs"),
        ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
        ({"batch_size": "big"}, "batch_size"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_out_of_range_hyperparameters_name_the_field(hyperparameters: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"model": "m", "training_file": "f", "hyperparameters": hyperparameters})
    assert any(field in ".".join(str(part) for part in error["loc"]) for error in caught.value.errors())


def test_priority_defaults_to_zero_and_is_bounded() -> None:
    assert JobCreate(model="m", training_file="f").priority == 0
    assert JobCreate.model_validate({"model": "m", "training_file": "f", "priority": 10}).priority == 10
    for wrong in (11, -11, "high"):
        with pytest.raises(ValidationError, match="priority"):
            JobCreate.model_validate({"model": "m", "training_file": "f", "priority": wrong})
