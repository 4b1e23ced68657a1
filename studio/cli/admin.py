"""`mini-studio admin ...`: clients (tenants) and their API keys. Uses the admin key."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from studio.cli.context import state
from studio.cli.output import console, err_console, print_fields, print_json, print_table, when

app = typer.Typer(help="Administration (admin key): clients and keys.", no_args_is_help=True)
clients_app = typer.Typer(help="Clients: list, create, disable, enable.", no_args_is_help=True)
keys_app = typer.Typer(help="A client's API keys: create, list.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def _print_client(client: dict[str, Any]) -> None:
    limits = client.get("limits") or {}
    print_fields([
        ("id", client["id"]),
        ("name", client["name"]),
        ("disabled", client.get("disabled")),
        ("limits", ", ".join(f"{k}={v}" for k, v in limits.items())),
        ("created", when(client.get("created_at"))),
    ])  # fmt: skip


@clients_app.command("ls")
def list_clients(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List clients."""
    with state(ctx).client(admin=True) as api:
        page = api.get("/admin/clients", limit=limit)
    if as_json:
        print_json(page)
        return
    print_table(
        ["ID", "NAME", "DISABLED", "CREATED"],
        [(c["id"], c["name"], "yes" if c["disabled"] else "no", when(c["created_at"])) for c in page["data"]],
    )


@clients_app.command("create")
def create_client(
    ctx: typer.Context,
    name: str,
    max_concurrent_jobs: Annotated[int | None, typer.Option(min=0)] = None,
    max_deployments: Annotated[int | None, typer.Option(min=0)] = None,
    requests_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
    allowed_base_model: Annotated[
        list[str] | None, typer.Option(help="A base model name or pattern (acme/*), repeatable.")
    ] = None,
    with_key: Annotated[
        bool, typer.Option("--with-key", help="Also create a key; print its secret.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a client (and, with --with-key, its first API key)."""
    limits: dict[str, Any] = {
        k: v
        for k, v in {
            "max_concurrent_jobs": max_concurrent_jobs,
            "max_deployments": max_deployments,
            "requests_per_minute": requests_per_minute,
            "allowed_base_models": allowed_base_model or None,
        }.items()
        if v is not None
    }
    body: dict[str, Any] = {"name": name}
    if limits:
        body["limits"] = limits
    with state(ctx).client(admin=True) as api:
        client = api.post("/admin/clients", body)
        key = api.post(f"/admin/clients/{client['id']}/keys") if with_key else None
    if as_json:
        print_json({**client, "key": key} if key else client)
        return
    _print_client(client)
    if key:
        _print_secret(key)


def _set_disabled(ctx: typer.Context, client_id: str, *, disabled: bool, as_json: bool) -> None:
    action = "disable" if disabled else "enable"
    with state(ctx).client(admin=True) as api:
        client = api.post(f"/admin/clients/{client_id}/{action}")
    if as_json:
        print_json(client)
    else:
        console.print(f"{client['id']} ({client['name']}): {action}d")


@clients_app.command("disable")
def disable_client(ctx: typer.Context, client_id: str, as_json: JsonFlag = False) -> None:
    """Disable a client: its keys get 403 until it is enabled again."""
    _set_disabled(ctx, client_id, disabled=True, as_json=as_json)


@clients_app.command("enable")
def enable_client(ctx: typer.Context, client_id: str, as_json: JsonFlag = False) -> None:
    """Enable a disabled client."""
    _set_disabled(ctx, client_id, disabled=False, as_json=as_json)


def _print_secret(key: dict[str, Any]) -> None:
    err_console.print(f"key {key['id']} for {key['client_id']} (shown once, keep it safe):")
    console.out(key["secret"], highlight=False)


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    client_id: str,
    name: Annotated[str | None, typer.Option(help="A name for the key.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key for a client; its secret is printed this once (alone on stdout)."""
    with state(ctx).client(admin=True) as api:
        key = api.post(f"/admin/clients/{client_id}/keys", {"name": name} if name else None)
    if as_json:
        print_json(key)
    else:
        _print_secret(key)


@keys_app.command("ls")
def list_keys(ctx: typer.Context, client_id: str, as_json: JsonFlag = False) -> None:
    """List a client's keys (their hints only)."""
    with state(ctx).client(admin=True) as api:
        page = api.get(f"/admin/clients/{client_id}/keys")
    if as_json:
        print_json(page)
        return
    print_table(
        ["ID", "NAME", "HINT", "DISABLED", "CREATED"],
        [
            (k["id"], k["name"], k["hint"], "yes" if k["disabled"] else "no", when(k["created_at"]))
            for k in page["data"]
        ],
    )
