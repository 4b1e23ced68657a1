"""The global options every command shares (`--url`, `--api-key`, ...) and the client built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer

from studio.cli.client import ApiClient
from studio.cli.config import (
    ENV_ADMIN_KEY,
    ENV_API_KEY,
    ConfigError,
    Connection,
    StoredConfig,
    load_config,
    resolve,
)


@dataclass(frozen=True)
class CliState:
    """The root command's options, kept on the click context for the subcommands."""

    url: str | None
    api_key: str | None
    admin_key: str | None
    config_path: Path
    timeout_s: float

    def stored(self) -> StoredConfig:
        """Return the config file's contents. Raises: ConfigError."""
        return load_config(self.config_path)

    def connection(self, *, admin: bool = False) -> Connection:
        """Return the URL and key to use (flags, environment, config file).

        Raises:
            ConfigError: no key anywhere, or the config file cannot be read (exit code 2).
        """
        found = resolve(
            flag_url=self.url,
            flag_key=self.api_key,
            flag_admin_key=self.admin_key,
            env=os.environ,
            stored=self.stored(),
            admin=admin,
        )
        if found.key is None:
            env = f"${ENV_ADMIN_KEY} or ${ENV_API_KEY}" if admin else f"${ENV_API_KEY}"
            flag = "--admin-key" if admin else "--api-key"
            login = "mini-studio login --admin" if admin else "mini-studio login"
            raise ConfigError(f"no API key: pass {flag}, set {env}, or run `{login}`")
        return found

    def client(self, *, admin: bool = False) -> ApiClient:
        """Return a client for the resolved URL and key (close it: it is a context manager)."""
        found = self.connection(admin=admin)
        return ApiClient(found.url, found.key, timeout_s=self.timeout_s)


def state(ctx: typer.Context) -> CliState:
    """Return the root command's options from any subcommand's context."""
    root = ctx.find_root().obj
    if not isinstance(root, CliState):  # pragma: no cover - the root callback always sets it
        raise ConfigError("internal: the root options were not parsed")
    return root
