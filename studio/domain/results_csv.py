"""A job's step-metrics CSV as OpenAI writes it (the file in a job's `result_files`).

OpenAI's header is `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`, one row per
step, an empty cell where a figure was not measured at that step. Mini Studio measures the training loss
at every step and the validation figures at evaluations only; the training batch's token accuracy is
not measured, so `train_accuracy` stays empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
RESULTS_FILENAME = "step_metrics.csv"


def _figure(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def step_rows(metrics: Iterable[Mapping[str, Any]]) -> list[dict[str, float | int | None]]:
    """Return one row per step from metrics events' data, oldest first, by step.

    An evaluation and a training step of the same step share a row. Metrics of a step seen again (a
    retry resumed from an earlier checkpoint) replace the earlier attempt's: `metrics` is read in the
    order the events were stored.
    """
    rows: dict[int, dict[str, float | int | None]] = {}
    for data in metrics:
        step = data.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        row = rows.setdefault(step, dict.fromkeys(RESULTS_COLUMNS) | {"step": step})
        for column in RESULTS_COLUMNS[1:]:
            figure = _figure(data.get(column))
            if figure is not None:
                row[column] = figure
    return [rows[step] for step in sorted(rows)]


def results_csv(rows: Iterable[Mapping[str, float | int | None]]) -> bytes:
    """Return the CSV of `rows` (from `step_rows`): OpenAI's header, then a line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULTS_COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(column) is None else _cell(row[column]) for column in RESULTS_COLUMNS])
    return out.getvalue().encode()


def _cell(value: float | int | None) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
