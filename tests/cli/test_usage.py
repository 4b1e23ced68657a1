"""Exit codes and messages that need no server: usage errors are 2, an unreachable server is 1."""

from __future__ import annotations

from pathlib import Path

from tests import servers
from tests.cli.conftest import RunCli


def test_help_lists_the_commands(run_cli: RunCli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("login", "files", "jobs", "deploy", "chat", "admin"):
        assert command in result.stdout
    assert run_cli().returncode in (0, 2)  # no command: the help


def test_no_key_anywhere_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("files", "ls")
    assert result.returncode == 2
    assert "no API key" in result.stderr and "mini-studio login" in result.stderr
    admin = run_cli("admin", "clients", "ls")
    assert admin.returncode == 2 and "MINI_STUDIO_ADMIN_KEY" in admin.stderr


def test_bad_options_are_usage_errors(run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli("jobs", "lss").returncode == 2
    assert run_cli("--api-key", "k", "files", "upload", str(tmp_path / "missing.jsonl")).returncode == 2
    (tmp_path / "a.jsonl").write_text("{}\n")
    bad_size = run_cli("--api-key", "k", "files", "upload", str(tmp_path / "a.jsonl"), "--part-size", "lots")
    assert bad_size.returncode == 2 and "not a size" in bad_size.stderr
    assert run_cli("--api-key", "k", "chat", "m", "--json").returncode == 2


def test_an_unreachable_server_exits_1_and_login_saves_nothing(run_cli: RunCli, config_file: Path) -> None:
    url = f"http://127.0.0.1:{servers.free_port()}"
    result = run_cli("files", "ls", env={"MINI_STUDIO_URL": url, "MINI_STUDIO_API_KEY": "k"})
    assert result.returncode == 1 and f"cannot reach Mini Studio at {url}" in result.stderr
    login = run_cli("--url", url, "login", "--api-key", "k")
    assert login.returncode == 1 and not config_file.exists()


def test_a_broken_config_file_is_a_usage_error(run_cli: RunCli, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("url = [\n")
    result = run_cli("files", "ls")
    assert result.returncode == 2 and "not valid TOML" in result.stderr
