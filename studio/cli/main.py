"""The `mini-studio` command: global options, `login`/`logout`/`whoami`, and the feature subcommands.

Exit codes: 0 done; 1 the API answered an error (its message is printed), the server could not be
reached, or the thing asked for ended badly (a failed job, a failed deployment, an invalid dataset);
2 a usage error (bad option, no API key anywhere, unreadable config file).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from studio.cli import admin, chat, deploy, files, jobs
from studio.cli.client import ApiClient, ApiError
from studio.cli.config import ConfigError, config_path, resolve, save_config, updated
from studio.cli.context import CliState, state
from studio.cli.output import err_console, error, print_fields, print_json

app = typer.Typer(
    name="mini-studio",
    help="Mini Studio from the terminal: datasets, fine-tuning jobs, deployments, chat, administration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.add_typer(deploy.app, name="deployments")
app.add_typer(admin.app, name="admin")
app.command("deploy")(deploy.deploy)
app.command("undeploy")(deploy.undeploy)
app.command("chat")(chat.chat)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(help="Mini Studio's URL (env MINI_STUDIO_URL; default http://localhost:8000)."),
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="A client API key (env MINI_STUDIO_API_KEY).")] = None,
    admin_key: Annotated[
        str | None, typer.Option(help="The admin key, for `admin` (env MINI_STUDIO_ADMIN_KEY).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Config file (env MINI_STUDIO_CONFIG; default ~/.config/mini-studio/config.toml)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each answer.")] = 30.0,
) -> None:
    """Key and URL come from these flags, then the environment, then the config file (`login`)."""
    ctx.obj = CliState(
        url=url,
        api_key=api_key,
        admin_key=admin_key,
        config_path=config or config_path(os.environ),
        timeout_s=timeout,
    )


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Mini Studio's URL (default: as resolved now).")] = None,
    api_key: Annotated[str | None, typer.Option(help="The key (asked for when not given).")] = None,
    as_admin: Annotated[bool, typer.Option("--admin", help="Store the admin key (for `admin ...`).")] = False,
    verify: Annotated[bool, typer.Option(help="Check the key against the server first.")] = True,
) -> None:
    """Check a key against the server and store it with the URL in the config file (mode 0600)."""
    cli = state(ctx)
    stored = cli.stored()
    found = resolve(flag_url=url or cli.url, flag_key=None, env=os.environ, stored=stored)
    key = api_key or (cli.admin_key if as_admin else cli.api_key)
    if not key:
        key = typer.prompt("Admin key" if as_admin else "API key", hide_input=True).strip()
    if verify:
        with ApiClient(found.url, key, timeout_s=cli.timeout_s) as api:
            if as_admin:
                api.get("/admin/clients", limit=1)
                who = "the admin"
            else:
                me = api.get("/v1/me")
                who = f"client {me['name']} ({me['id']})"
        err_console.print(f"logged in to {found.url} as {who}")
    save_config(cli.config_path, updated(stored, url=found.url, key=key, admin=as_admin))
    err_console.print(f"saved to {cli.config_path}")


@app.command()
def logout(
    ctx: typer.Context,
    as_admin: Annotated[bool, typer.Option("--admin", help="Forget the admin key instead.")] = False,
) -> None:
    """Forget the stored client key (or, with --admin, the admin key); the URL stays."""
    cli = state(ctx)
    stored = cli.stored()
    field = "admin_key" if as_admin else "api_key"
    if getattr(stored, field) is None:
        err_console.print(f"no {field} in {cli.config_path}")
        return
    save_config(cli.config_path, dataclasses.replace(stored, **{field: None}))
    err_console.print(f"removed {field} from {cli.config_path}")


@app.command()
def whoami(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Show the URL and key in use (and where they came from) and the client the key belongs to."""
    cli = state(ctx)
    found = cli.connection()
    with cli.client() as api:
        me = api.get("/v1/me")
    if as_json:
        print_json(me)
        return
    print_fields([
        ("url", f"{found.url} (from {found.url_source})"),
        ("key", f"from {found.key_source}"),
        ("client", f"{me['name']} ({me['id']})"),
        ("limits", ", ".join(f"{k}={v}" for k, v in (me.get("limits") or {}).items())),
    ])  # fmt: skip


def main() -> None:
    """Run the CLI; API errors exit 1 with the API's message, config errors exit 2."""
    try:
        app(prog_name="mini-studio")
    except ApiError as exc:
        error(exc.describe())
        raise SystemExit(1) from None
    except ConfigError as exc:
        error(str(exc))
        raise SystemExit(2) from None
