"""`mini-studio deploy MODEL`, `undeploy`, `deployments ls/show`: models served on the cluster."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from studio.cli.client import ApiClient, ApiError
from studio.cli.context import state
from studio.cli.output import console, err_console, print_fields, print_json, print_table, when

app = typer.Typer(help="Deployments: list, show.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
POLL_S = 1.0


def wait_ready(api: ApiClient, deployment: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Poll a deployment until it is no longer `deploying`; return it (`ready` or `failed`).

    Raises:
        ApiError: it cannot be read, or it is still deploying after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while deployment["status"] == "deploying":
        if time.monotonic() > deadline:
            raise ApiError(f"{deployment['model']} is still deploying after {timeout_s:.0f} s")
        time.sleep(POLL_S)
        deployment = api.get(f"/v1/deployments/{deployment['id']}")
    return deployment


def _create(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    return dict(api.post("/v1/deployments", body))


def _deploy_base_of(api: ApiClient, model: str, *, wait_s: float) -> None:
    """Deploy the base model of the LoRA fine-tune `model` (unless it already runs) and wait for it."""
    base = api.get(f"/v1/models/{model}").get("base_model")
    if not base:
        raise ApiError(f"{model} has no base model to deploy")
    err_console.print(f"deploying the base model {base} first")
    try:
        deployment = _create(api, {"model": base})
    except ApiError as exc:
        if exc.code != "already_deployed":
            raise
        return
    deployment = wait_ready(api, deployment, timeout_s=wait_s)
    if deployment["status"] != "ready":
        raise ApiError(f"the base model {base} failed to deploy: {deployment.get('error')}")


def _print_deployment(deployment: dict[str, Any]) -> None:
    print_fields([
        ("id", deployment["id"]),
        ("model", deployment["model"]),
        ("kind", deployment.get("kind")),
        ("status", deployment["status"]),
        ("placement", deployment.get("placement")),
        ("target", deployment.get("target")),
        ("replicas", f"{deployment.get('min_replicas')}-{deployment.get('max_replicas')}"),
        ("error", deployment.get("error")),
        ("created", when(deployment.get("created_at"))),
        ("ready", when(deployment.get("ready_at")) if deployment.get("ready_at") else None),
    ])  # fmt: skip


def deploy(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A base model or a fine-tuned model (ft:...).")],
    with_base: Annotated[
        bool,
        typer.Option("--with-base", help="For a LoRA fine-tune: deploy its base model first if needed."),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until it is ready (or failed).")] = True,
    wait_timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for it.")] = 900,
    target: Annotated[str | None, typer.Option(help="serve or kubernetes.")] = None,
    min_replicas: Annotated[int | None, typer.Option(min=0)] = None,
    max_replicas: Annotated[int | None, typer.Option(min=1)] = None,
    num_cpus: Annotated[float | None, typer.Option(min=0)] = None,
    num_gpus: Annotated[float | None, typer.Option(min=0)] = None,
    max_model_len: Annotated[int | None, typer.Option(min=16)] = None,
    tensor_parallel_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Engine workers splitting each layer (one GPU each; default: every GPU of a replica)."
        ),
    ] = None,
    pipeline_parallel_size: Annotated[
        int | None,
        typer.Option(min=1, help="Engine stages splitting the layers (GPUs only; may span nodes)."),
    ] = None,
    max_adapters: Annotated[
        int | None,
        typer.Option(min=0, help="Adapters a base holds per replica; 0: its engine runs without LoRA."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a model; wait until it answers. Exits 1 if it failed to start."""
    body: dict[str, Any] = {"model": model}
    options = {
        "target": target,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    engine = {
        "max_model_len": max_model_len,
        "tensor_parallel_size": tensor_parallel_size,
        "pipeline_parallel_size": pipeline_parallel_size,
        "max_adapters": max_adapters,
    }
    if any(v is not None for v in engine.values()):
        body["engine"] = {k: v for k, v in engine.items() if v is not None}
    with state(ctx).client() as api:
        try:
            deployment = _create(api, body)
        except ApiError as exc:
            if not (with_base and exc.code == "base_not_deployed"):
                raise
            _deploy_base_of(api, model, wait_s=wait_timeout)
            deployment = _create(api, body)
        if wait:
            if not as_json:
                err_console.print(f"{deployment['id']}: deploying {model}...")
            deployment = wait_ready(api, deployment, timeout_s=wait_timeout)
    if as_json:
        print_json(deployment)
    elif deployment["status"] == "failed":
        err_console.print(f"{deployment['id']}: {model} failed: {deployment.get('error')}")
    else:
        console.print(f"{deployment['id']}: {model} {deployment['status']}")
    if deployment["status"] == "failed":
        raise typer.Exit(1)


def undeploy(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A deployment id (dep-...) or a deployed model's name.")],
    as_json: JsonFlag = False,
) -> None:
    """Undeploy a model; for a shared base model, drop your hold (it stops once nobody holds it)."""
    with state(ctx).client() as api:
        deployment_id = target
        if not target.startswith("dep-"):
            found = [d for d in api.get("/v1/deployments")["data"] if d["model"] == target]
            if not found:
                raise ApiError(f"{target} is not deployed", status=404, code="deployment_not_found")
            deployment_id = found[0]["id"]
        deleted = api.delete(f"/v1/deployments/{deployment_id}")
    if as_json:
        print_json(deleted)
    else:
        console.print(f"{deleted['id']}: {deleted['model']} {deleted['status']}")


@app.command("ls")
def list_deployments(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List your deployments."""
    with state(ctx).client() as api:
        page = api.get("/v1/deployments")
    if as_json:
        print_json(page)
        return
    print_table(
        ["ID", "MODEL", "STATUS", "PLACEMENT", "TARGET", "CREATED"],
        [
            (d["id"], d["model"], d["status"], d.get("placement"), d.get("target"), when(d["created_at"]))
            for d in page["data"]
        ],
    )


@app.command()
def show(ctx: typer.Context, deployment_id: str, as_json: JsonFlag = False) -> None:
    """Show one deployment."""
    with state(ctx).client() as api:
        deployment = api.get(f"/v1/deployments/{deployment_id}")
    if as_json:
        print_json(deployment)
    else:
        _print_deployment(deployment)
