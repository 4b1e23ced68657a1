"""`mini-studio files ...`: upload datasets (big ones in parts), list, show, delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from studio.cli.context import state
from studio.cli.output import (
    console,
    human_bytes,
    parse_size,
    print_fields,
    print_json,
    print_table,
    when,
)
from studio.cli.uploads import upload_path

app = typer.Typer(help="Datasets: upload, list, show, delete.", no_args_is_help=True)

DEFAULT_PART_SIZE = "32MiB"
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def _validation(file: dict[str, Any]) -> str:
    details = file.get("details") or {}
    return str(details.get("validation_status") or file.get("status"))


def print_file(file: dict[str, Any]) -> None:
    details = file.get("details") or {}
    stats = details.get("stats") or {}
    tokens = stats.get("tokens") or {}
    print_fields([
        ("id", file["id"]),
        ("filename", file.get("filename")),
        ("bytes", human_bytes(file.get("bytes"))),
        ("created", when(file.get("created_at"))),
        ("status", _validation(file)),
        ("format", details.get("format")),
        ("rows", stats.get("rows")),
        ("tokens", tokens.get("total")),
        ("errors", details.get("error_count") or None),
    ])  # fmt: skip
    issues = [("error", e) for e in details.get("errors") or []]
    issues += [("warning", w) for w in details.get("warnings") or []]
    for kind, issue in issues[:20]:
        where = f"line {issue['line']}" if issue.get("line") else "file"
        field = f" [{issue['field']}]" if issue.get("field") else ""
        style = "red" if kind == "error" else "yellow"
        console.print(
            f"  [{style}]{kind}[/{style}] {where}{field}: {issue.get('message')} ({issue.get('code')})",
            markup=True,
        )
    if len(issues) > 20:
        console.print(f"  ... and {len(issues) - 20} more (see --json)")


@app.command()
def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A .jsonl file.")],
    model: Annotated[
        str | None, typer.Option(help="Count tokens with this base model's tokenizer (one-part uploads).")
    ] = None,
    part_size: Annotated[
        str, typer.Option(help="Files larger than this go through the Uploads API in parts of this size.")
    ] = DEFAULT_PART_SIZE,
    wait: Annotated[
        bool, typer.Option(help="Wait for the background validation of big files to finish.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Upload a dataset; print its id and validation report. Exits 1 if the file is invalid."""
    try:
        part_bytes = parse_size(part_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--part-size") from None
    if part_bytes < 1024:
        raise typer.BadParameter("a part is at least 1 KiB", param_hint="--part-size")
    with state(ctx).client() as api:
        file = upload_path(api, path, part_size=part_bytes, model=model)
        while wait and _validation(file) in ("uploaded", "validating"):
            time.sleep(1)
            file = api.get(f"/v1/files/{file['id']}")
    if as_json:
        print_json(file)
    else:
        print_file(file)
    if _validation(file) == "invalid":
        raise typer.Exit(1)


@app.command("ls")
def list_files(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List your datasets, newest first."""
    with state(ctx).client() as api:
        page = api.get("/v1/files", limit=limit, order="desc")
    if as_json:
        print_json(page)
        return
    print_table(
        ["ID", "FILENAME", "SIZE", "STATUS", "ROWS", "CREATED"],
        [
            (
                f["id"],
                f["filename"],
                human_bytes(f["bytes"]),
                _validation(f),
                ((f.get("details") or {}).get("stats") or {}).get("rows"),
                when(f["created_at"]),
            )
            for f in page["data"]
        ],
    )


@app.command()
def show(ctx: typer.Context, file_id: str, as_json: JsonFlag = False) -> None:
    """Show one dataset: status, statistics, errors by line."""
    with state(ctx).client() as api:
        file = api.get(f"/v1/files/{file_id}")
    if as_json:
        print_json(file)
    else:
        print_file(file)


@app.command("rm")
def remove(ctx: typer.Context, file_id: str, as_json: JsonFlag = False) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    with state(ctx).client() as api:
        deleted = api.delete(f"/v1/files/{file_id}")
    if as_json:
        print_json(deleted)
    else:
        console.print(f"deleted {deleted.get('id', file_id)}")
