"""Validation of big datasets as a Ray task, so it runs in its own process, not on the ingress's GIL.

Validating a 1 GB file takes about a minute of one core; in a thread of the ingress replica it slows
every request and upload the replica serves meanwhile. Small files stay in a thread, where a Ray task's
start-up would cost more than the work, unless tokens are counted with a model's tokenizer: that loads
transformers, which the ingress replica never does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from studio.domain.datasets import ValidationLimits, ValidationReport
from studio.stores.local_files import LocalFileStore, ThreadValidationRunner, validate_path


@ray.remote(num_cpus=1, max_retries=2)
def _validate_task(
    path: str, limits: ValidationLimits, tokenizer: str | None, models_dir: str | None
) -> ValidationReport:
    return validate_path(Path(path), limits, tokenizer, Path(models_dir) if models_dir else None)


class RayTaskValidationRunner:
    """`DatasetValidationRunner` that sends files over `task_above_bytes` to a Ray task on this node."""

    def __init__(self, files: LocalFileStore, *, task_above_bytes: int, models_dir: Path) -> None:
        self._files = files
        self._threads = ThreadValidationRunner(files, models_dir=models_dir)
        self._task_above_bytes = task_above_bytes
        self._models_dir = models_dir

    async def validate(
        self, relative_path: str, limits: ValidationLimits, *, tokenizer: str | None = None
    ) -> ValidationReport:
        path = self._files.absolute(relative_path)
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        # A tokenizer means transformers: loaded in a task's process, never in the ingress replica.
        if size <= self._task_above_bytes and tokenizer is None:
            return await self._threads.validate(relative_path, limits)
        # The file is on this node's disk (or a shared one): run where it is.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
        task: Any = _validate_task.options(scheduling_strategy=here).remote(
            str(path), limits, tokenizer, str(self._models_dir)
        )
        report: ValidationReport = await task
        return report
