"""The fine-tuning job create body: OpenAI's two hyperparameter spellings, bounds, unknown fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from studio.schemas.jobs import DpoHyperparametersIn, Hyperparameters, JobCreate, JobPublic
from tests.helpers import SMALL_LORA, stored_job


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


def test_a_dpo_method_carries_beta_beside_the_usual_hyperparameters() -> None:
    hyperparameters = {"beta": 0.2, "n_epochs": 2, "batch_size": "auto"}
    body = JobCreate.model_validate(
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
        }
    )
    given = body.resolved_hyperparameters()
    assert body.method_type == "dpo" and isinstance(given, DpoHyperparametersIn)
    assert (given.beta, given.n_epochs, given.batch_size, given.learning_rate_multiplier) == (
        0.2,
        2,
        "auto",
        "auto",
    )
    bare = JobCreate.model_validate({"model": "m", "training_file": "f", "method": {"type": "dpo"}})
    assert isinstance(bare.resolved_hyperparameters(), DpoHyperparametersIn)
    assert bare.resolved_hyperparameters().beta == "auto"  # type: ignore[attr-defined]
    assert JobCreate(model="m", training_file="f").method_type == "supervised"


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}, "beta"),
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": "high"}}}, "beta"),
        ({"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}, "gamma"),
        ({"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}, "beta"),
        ({"type": "reinforcement"}, "type"),
    ],
)
def test_bad_method_settings_name_the_field(method: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"model": "m", "training_file": "f", "method": method})
    assert any(field in ".".join(str(part) for part in error["loc"]) for error in caught.value.errors())


def test_settings_of_another_method_type_are_refused() -> None:
    with pytest.raises(ValidationError, match=r'method\.supervised is given, but method\.type is "dpo"'):
        JobCreate.model_validate(
            {"model": "m", "training_file": "f", "method": {"type": "dpo", "supervised": {}}}
        )
    with pytest.raises(ValidationError, match=r'method\.dpo is given, but method\.type is "supervised"'):
        JobCreate.model_validate(
            {"model": "m", "training_file": "f", "method": {"type": "supervised", "dpo": {}}}
        )


def test_the_public_method_is_the_jobs_type_with_its_hyperparameters() -> None:
    job = stored_job("client-1", created_at=1)
    supervised = JobPublic.of(job).method
    assert supervised.type == "supervised" and supervised.dpo is None and supervised.supervised is not None
    assert supervised.supervised.hyperparameters.n_epochs == SMALL_LORA.n_epochs
    dpo_hp = SMALL_LORA.model_copy(update={"method_type": "dpo", "beta": 0.3})
    dpo = JobPublic.of(job.model_copy(update={"hyperparameters": dpo_hp})).method
    assert dpo.type == "dpo" and dpo.supervised is None and dpo.dpo is not None
    assert dpo.dpo.hyperparameters.model_dump() == {
        "n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0, "beta": 0.3,
    }  # fmt: skip


def test_stored_hyperparameters_keep_beta_to_dpo_jobs() -> None:
    old = SMALL_LORA.model_dump(exclude={"method_type", "beta"})  # as stored before DPO existed
    assert Hyperparameters.model_validate(old).method_type == "supervised"
    with pytest.raises(ValidationError, match="beta is set for DPO jobs"):
        Hyperparameters.model_validate({**old, "method_type": "dpo"})
    with pytest.raises(ValidationError, match="beta is set for DPO jobs"):
        Hyperparameters.model_validate({**old, "beta": 0.1})
