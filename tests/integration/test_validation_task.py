"""Big datasets validate in a Ray task (own process), small ones in a thread; same report either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.app.validation import RayTaskValidationRunner
from studio.domain.datasets import ValidationLimits
from studio.stores.local_files import LocalFileStore
from tests.api.datasets_data import broken_on_line_7, chat_rows, jsonl

pytestmark = pytest.mark.integration


async def test_ray_task_and_thread_give_the_same_report(ray_cluster: str, tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path)
    (tmp_path / "good.jsonl").write_bytes(jsonl(chat_rows(40)))
    (tmp_path / "bad.jsonl").write_bytes(broken_on_line_7())
    in_task = RayTaskValidationRunner(files, task_above_bytes=0, models_dir=tmp_path)
    in_thread = RayTaskValidationRunner(files, task_above_bytes=10**9, models_dir=tmp_path)
    for name in ("good.jsonl", "bad.jsonl"):
        assert await in_task.validate(name, ValidationLimits()) == await in_thread.validate(
            name, ValidationLimits()
        )
    bad = await in_task.validate("bad.jsonl", ValidationLimits())
    assert not bad.valid and bad.errors[0].line == 7


async def test_a_tokenizer_count_runs_in_a_ray_task_even_for_a_small_file(
    ray_cluster: str, tmp_path: Path
) -> None:
    from studio.stores.local_files import validate_path
    from studio.training import TINY_MODEL_NAME

    files = LocalFileStore(tmp_path / "data")
    (tmp_path / "data" / "good.jsonl").write_bytes(jsonl(chat_rows(20)))
    runner = RayTaskValidationRunner(files, task_above_bytes=10**9, models_dir=tmp_path / "models")
    report = await runner.validate("good.jsonl", ValidationLimits(), tokenizer=TINY_MODEL_NAME)
    assert report.stats.token_counting == TINY_MODEL_NAME
    here = validate_path(
        tmp_path / "data" / "good.jsonl", ValidationLimits(), TINY_MODEL_NAME, tmp_path / "models"
    )
    assert report == here
    missing = await runner.validate(
        "good.jsonl", ValidationLimits(), tokenizer=str(tmp_path / "no-such-model")
    )
    assert missing.valid and missing.warnings[-1].code == "tokenizer_unavailable"
    assert (
        missing.stats.tokens_total
        == (await runner.validate("good.jsonl", ValidationLimits())).stats.tokens_total
    )
