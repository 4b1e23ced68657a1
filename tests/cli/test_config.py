"""Where the CLI finds its URL and keys (flags, then environment, then config file) and how it stores them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from studio.cli.config import (
    DEFAULT_URL,
    ConfigError,
    StoredConfig,
    config_path,
    load_config,
    resolve,
    save_config,
    updated,
)

FILE = StoredConfig(url="http://file:8000/", api_key="sk-file", admin_key="admin-file")
ENV = {
    "MINI_STUDIO_URL": "http://env:8000",
    "MINI_STUDIO_API_KEY": "sk-env",
    "MINI_STUDIO_ADMIN_KEY": "adm-env",
}


def test_flags_come_before_the_environment_which_comes_before_the_file() -> None:
    both = resolve(flag_url="http://flag:1", flag_key="sk-flag", env=ENV, stored=FILE)
    assert (both.url, both.key, both.url_source, both.key_source) == (
        "http://flag:1",
        "sk-flag",
        "--url",
        "--api-key",
    )
    env = resolve(flag_url=None, flag_key=None, env=ENV, stored=FILE)
    assert (env.url, env.key) == ("http://env:8000", "sk-env")
    stored = resolve(flag_url=None, flag_key=None, env={}, stored=FILE)
    assert (stored.url, stored.key, stored.key_source) == (
        "http://file:8000",
        "sk-file",
        "config file (api_key)",
    )
    nothing = resolve(flag_url=None, flag_key=None, env={}, stored=StoredConfig())
    assert (nothing.url, nothing.key, nothing.url_source) == (DEFAULT_URL, None, "default")
    # Each value on its own: a key from the environment does not hide the file's URL.
    mixed = resolve(flag_url=None, flag_key=None, env={"MINI_STUDIO_API_KEY": "sk-env"}, stored=FILE)
    assert (mixed.url, mixed.key) == ("http://file:8000", "sk-env")
    empty = resolve(flag_url="", flag_key="", env={"MINI_STUDIO_API_KEY": ""}, stored=FILE)
    assert empty.key == "sk-file"


def test_admin_commands_prefer_the_admin_key_at_each_level() -> None:
    def key(**kwargs: object) -> str | None:
        options: dict[str, object] = {"flag_url": None, "flag_key": None, "env": {}, "stored": StoredConfig()}
        options.update(kwargs)
        return resolve(admin=True, **options).key  # type: ignore[arg-type]

    assert key(flag_admin_key="adm-flag", flag_key="sk-flag", env=ENV, stored=FILE) == "adm-flag"
    assert key(flag_key="sk-flag", env=ENV, stored=FILE) == "sk-flag"
    assert key(env=ENV, stored=FILE) == "adm-env"
    assert key(env={"MINI_STUDIO_API_KEY": "sk-env"}, stored=FILE) == "sk-env"
    assert key(stored=FILE) == "admin-file"
    assert key(stored=StoredConfig(api_key="sk-file")) == "sk-file"
    assert key() is None


def test_the_config_path_follows_the_environment(tmp_path: Path) -> None:
    assert config_path({"MINI_STUDIO_CONFIG": str(tmp_path / "c.toml")}) == tmp_path / "c.toml"
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "mini-studio" / "config.toml"
    assert config_path({}) == Path.home() / ".config" / "mini-studio" / "config.toml"


def test_the_config_file_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    assert load_config(path) == StoredConfig()
    odd = 'sk-"quoted"\\back\nline é'
    save_config(path, updated(StoredConfig(), url="http://h:1", key=odd, admin=False))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_config(path) == StoredConfig(url="http://h:1", api_key=odd)
    save_config(path, updated(load_config(path), url="http://h:2", key="adm", admin=True))
    assert load_config(path) == StoredConfig(url="http://h:2", api_key=odd, admin_key="adm")
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


def test_a_broken_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_text("api_key = 3\n")
    with pytest.raises(ConfigError, match="api_key must be a string"):
        load_config(path)
