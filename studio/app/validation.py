"""Validation of big datasets as a Ray task, so it runs in its own process, not on the ingress's GIL.

Validating a 1 GB file takes about a minute of one core; in a thread of the ingress replica it slows
every request and upload the replica serves meanwhile. Small files stay in a thread, where a Ray task's
start-up would cost more than the work.
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
def _validate_task(path: str, limits: ValidationLimits) -> ValidationReport:
    return validate_path(Path(path), limits)


class RayTaskValidationRunner:
    """`DatasetValidationRunner` that sends files over `task_above_bytes` to a Ray task on this node."""

    def __init__(self, files: LocalFileStore, *, task_above_bytes: int) -> None:
        self._files = files
        self._threads = ThreadValidationRunner(files)
        self._task_above_bytes = task_above_bytes

    async def validate(self, relative_path: str, limits: ValidationLimits) -> ValidationReport:
        path = self._files.absolute(relative_path)
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        if size <= self._task_above_bytes:
            return await self._threads.validate(relative_path, limits)
        # The file is on this node's disk (or a shared one): run where it is.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
        task: Any = _validate_task.options(scheduling_strategy=here).remote(str(path), limits)
        report: ValidationReport = await task
        return report
