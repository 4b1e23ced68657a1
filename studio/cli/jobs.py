"""`mini-studio jobs ...`: create, list, show, cancel fine-tuning jobs, and watch one to its end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from studio.cli.client import ApiClient
from studio.cli.context import state
from studio.cli.files import print_file
from studio.cli.output import console, duration, err_console, print_fields, print_json, print_table, when
from studio.cli.uploads import DEFAULT_PART_BYTES, upload_path
from studio.cli.watch import watch_job

app = typer.Typer(help="Fine-tuning jobs: create, list, show, cancel, watch.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def _file_id(api: ApiClient, value: str | None) -> str | None:
    """Return a file id: `value` itself, or the id of `value` uploaded when it names a local file."""
    if value is None or not Path(value).is_file():
        return value
    path = Path(value)
    file = upload_path(api, path, part_size=DEFAULT_PART_BYTES, model=None)
    err_console.print(f"uploaded {path} as {file['id']}")
    if file.get("status") == "error":
        print_file(file)
        raise typer.Exit(1)
    return str(file["id"])


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        out[key] = value
    return out


def _auto(value: float | None) -> float | str:
    return "auto" if value is None else value


def _print_job(job: dict[str, Any]) -> None:
    progress = job.get("progress") or {}
    hyper = job.get("hyperparameters") or {}
    resources = job.get("resources") or {}
    error = job.get("error") or {}
    step = progress.get("step")
    total = progress.get("total_steps")
    print_fields([
        ("id", job["id"]),
        ("status", job["status"]),
        ("model", job.get("model")),
        ("method", job.get("fine_tuning_method")),
        ("training file", job.get("training_file")),
        ("validation file", job.get("validation_file")),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in hyper.items()) or None),
        ("progress", f"step {step}/{total or '?'}" if step else None),
        ("train loss", progress.get("train_loss")),
        ("valid loss", progress.get("valid_loss")),
        ("ETA", duration(progress.get("eta_seconds")) if job["status"] == "running" else None),
        ("workers", resources.get("workers")),
        ("fine-tuned model", job.get("fine_tuned_model")),
        ("error", error.get("message")),
        ("created", when(job.get("created_at"))),
        ("finished", when(job.get("finished_at")) if job.get("finished_at") else None),
    ])  # fmt: skip


@app.command()
def create(
    ctx: typer.Context,
    training_file: Annotated[str, typer.Argument(help="A file id, or a local .jsonl file to upload first.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The base model, e.g. mini-studio/tiny-llama.")],
    validation_file: Annotated[str | None, typer.Option(help="A file id or a local .jsonl file.")] = None,
    method: Annotated[str, typer.Option(help="lora or full.")] = "lora",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: auto).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size (default: auto).")] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option(min=0, help="Learning rate multiplier (default: auto).")
    ] = None,
    lora_r: Annotated[int | None, typer.Option(min=1)] = None,
    lora_alpha: Annotated[int | None, typer.Option(min=1)] = None,
    lora_dropout: Annotated[float | None, typer.Option(min=0)] = None,
    lora_target_modules: Annotated[
        str | None, typer.Option(help="Comma-separated module names, e.g. q_proj,v_proj.")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name.")] = None,
    seed: Annotated[int | None, typer.Option(min=0)] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    estimate: Annotated[
        bool, typer.Option("--estimate", help="Only print the plan (memory, workers, time); create nothing.")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Then watch the job to its end.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a fine-tuning job (or, with --estimate, only plan one)."""
    if method not in ("lora", "full"):
        raise typer.BadParameter("lora or full", param_hint="--method")
    hyperparameters: dict[str, Any] = {
        "n_epochs": _auto(epochs),
        "batch_size": _auto(batch_size),
        "learning_rate_multiplier": _auto(lr_multiplier),
        "fine_tuning_method": method,
    }
    optional = {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout}
    hyperparameters.update({k: v for k, v in optional.items() if v is not None})
    if lora_target_modules:
        hyperparameters["lora_target_modules"] = [m.strip() for m in lora_target_modules.split(",") if m]
    body: dict[str, Any] = {"model": model, "hyperparameters": hyperparameters}
    with state(ctx).client() as api:
        body["training_file"] = _file_id(api, training_file)
        if validation_file:
            body["validation_file"] = _file_id(api, validation_file)
        for key, value in (("suffix", suffix), ("seed", seed), ("metadata", _metadata(metadata or []))):
            if value is not None:
                body[key] = value
        if estimate:
            plan = api.post("/v1/fine_tuning/jobs/estimate", body)
            print_json(plan) if as_json else _print_estimate(plan)
            return
        job = api.post("/v1/fine_tuning/jobs", body)
        if as_json and not watch:
            print_json(job)
        elif not as_json:
            console.print(f"created {job['id']} ({job['status']})")
        if watch:
            final = watch_job(api, job["id"], as_json=as_json)
            if final["status"] != "succeeded":
                raise typer.Exit(1)


def _print_estimate(plan: dict[str, Any]) -> None:
    fields: list[tuple[str, Any]] = [(k, v) for k, v in plan.items() if not isinstance(v, dict | list)]
    fields += [(k, v) for k, v in plan.items() if isinstance(v, dict)]
    print_fields(fields)


@app.command("ls")
def list_jobs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List your jobs, newest first."""
    with state(ctx).client() as api:
        page = api.get("/v1/fine_tuning/jobs", limit=limit)
    if as_json:
        print_json(page)
        return
    rows = []
    for job in page["data"]:
        progress = job.get("progress") or {}
        step, total = progress.get("step"), progress.get("total_steps")
        rows.append((
            job["id"],
            job["status"],
            job["model"],
            f"{step}/{total}" if total else None,
            progress.get("train_loss") and f"{progress['train_loss']:.4f}",
            job.get("fine_tuned_model"),
            when(job["created_at"]),
        ))  # fmt: skip
    print_table(["ID", "STATUS", "MODEL", "STEP", "LOSS", "FINE-TUNED MODEL", "CREATED"], rows)


@app.command()
def show(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Show one job: status, progress, losses, result."""
    with state(ctx).client() as api:
        job = api.get(f"/v1/fine_tuning/jobs/{job_id}")
    if as_json:
        print_json(job)
    else:
        _print_job(job)


@app.command()
def cancel(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Cancel a job (its checkpoints are kept)."""
    with state(ctx).client() as api:
        job = api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    if as_json:
        print_json(job)
    else:
        console.print(f"{job['id']}: {job['status']}")


@app.command()
def watch(
    ctx: typer.Context,
    job_id: str,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each event as a JSON line, then the final job.")
    ] = False,
) -> None:
    """Follow a job live (progress, loss sparkline, events) until it ends; exit 1 unless it succeeded."""
    with state(ctx).client() as api:
        final = watch_job(api, job_id, as_json=as_json)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def logs(
    ctx: typer.Context,
    job_id: str,
    tail_bytes: Annotated[int, typer.Option(min=1)] = 65536,
) -> None:
    """Print the end of the training process's log."""
    with state(ctx).client() as api:
        text = api.request(
            "GET", f"/v1/fine_tuning/jobs/{job_id}/logs", params={"tail_bytes": tail_bytes}
        ).text
    console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
