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
    in_task = RayTaskValidationRunner(files, task_above_bytes=0)
    in_thread = RayTaskValidationRunner(files, task_above_bytes=10**9)
    for name in ("good.jsonl", "bad.jsonl"):
        assert await in_task.validate(name, ValidationLimits()) == await in_thread.validate(
            name, ValidationLimits()
        )
    bad = await in_task.validate("bad.jsonl", ValidationLimits())
    assert not bad.valid and bad.errors[0].line == 7
