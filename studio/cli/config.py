"""Where the CLI finds its URL and keys: flags, then environment, then the config file.

The config file is TOML (`~/.config/mini-studio/config.toml`, or `$MINI_STUDIO_CONFIG`), written by
`mini-studio login` with mode 0600 because it holds secrets:

    url = "http://localhost:8000"
    api_key = "sk-ms-..."
    admin_key = "..."          # only after `mini-studio login --admin`
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_URL = "http://localhost:8000"
ENV_URL = "MINI_STUDIO_URL"
ENV_API_KEY = "MINI_STUDIO_API_KEY"
ENV_ADMIN_KEY = "MINI_STUDIO_ADMIN_KEY"
ENV_CONFIG = "MINI_STUDIO_CONFIG"
FILE_KEYS = ("url", "api_key", "admin_key")


class ConfigError(Exception):
    """The config file cannot be read, or no key was found anywhere (a usage error: exit code 2)."""


@dataclass(frozen=True)
class StoredConfig:
    """What the config file holds; every field may be missing."""

    url: str | None = None
    api_key: str | None = None
    admin_key: str | None = None


@dataclass(frozen=True)
class Connection:
    """The URL and key one command uses, and where each came from (for `whoami` and error messages)."""

    url: str
    key: str | None
    url_source: str
    key_source: str | None


def config_path(env: Mapping[str, str]) -> Path:
    """Return the config file's path: `$MINI_STUDIO_CONFIG`, else under `$XDG_CONFIG_HOME` or `~/.config`."""
    explicit = env.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mini-studio" / "config.toml"


def load_config(path: Path) -> StoredConfig:
    """Return the stored config (empty when the file does not exist).

    Raises:
        ConfigError: the file exists but is not valid TOML, or a value is not a string.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return StoredConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    for key in FILE_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
        values[key] = value
    return StoredConfig(**values)


def save_config(path: Path, config: StoredConfig) -> None:
    """Write the config file with mode 0600 (its folder 0700), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# Written by `mini-studio login`. Holds API keys: keep it private (mode 0600).\n"]
    for key in FILE_KEYS:
        value = getattr(config, key)
        if value is not None:
            # A JSON string (ASCII, with \" \\ \n \uXXXX escapes) is also a valid TOML basic string.
            lines.append(f"{key} = {json.dumps(value)}\n")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start: the secret is never readable by others, not even for a moment.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(lines))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def updated(config: StoredConfig, *, url: str, key: str, admin: bool) -> StoredConfig:
    """Return `config` with the URL and the client key (or, with `admin`, the admin key) replaced."""
    if admin:
        return replace(config, url=url, admin_key=key)
    return replace(config, url=url, api_key=key)


def _first(*candidates: tuple[str | None, str]) -> tuple[str, str] | None:
    for value, source in candidates:
        if value:
            return value, source
    return None


def resolve(
    *,
    flag_url: str | None,
    flag_key: str | None,
    env: Mapping[str, str],
    stored: StoredConfig,
    admin: bool = False,
    flag_admin_key: str | None = None,
) -> Connection:
    """Return the URL and key to use: flags first, then the environment, then the config file.

    With `admin` (the `admin ...` commands), at each of those levels the admin key comes before the
    client key: `--admin-key`, `--api-key`, `$MINI_STUDIO_ADMIN_KEY`, `$MINI_STUDIO_API_KEY`, the file's
    `admin_key`, then its `api_key`. The URL defaults to http://localhost:8000.
    """
    url = _first((flag_url, "--url"), (env.get(ENV_URL), f"${ENV_URL}"), (stored.url, "config file")) or (
        DEFAULT_URL,
        "default",
    )
    key_candidates: list[tuple[str | None, str]] = []
    if admin:
        key_candidates += [
            (flag_admin_key, "--admin-key"),
            (flag_key, "--api-key"),
            (env.get(ENV_ADMIN_KEY), f"${ENV_ADMIN_KEY}"),
            (env.get(ENV_API_KEY), f"${ENV_API_KEY}"),
            (stored.admin_key, "config file (admin_key)"),
            (stored.api_key, "config file (api_key)"),
        ]
    else:
        key_candidates += [
            (flag_key, "--api-key"),
            (env.get(ENV_API_KEY), f"${ENV_API_KEY}"),
            (stored.api_key, "config file (api_key)"),
        ]
    key = _first(*key_candidates)
    return Connection(
        url=url[0].rstrip("/"),
        key=key[0] if key else None,
        url_source=url[1],
        key_source=key[1] if key else None,
    )
