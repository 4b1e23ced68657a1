"""The CLI's tests run the real `mini-studio` console script as a subprocess.

The slow ones use the session's Serve app (`serve_app`, from the `tests.serve_fixtures` plugin: the
same Ray cluster and app as tests/integration, started once per run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RunCli = Callable[..., subprocess.CompletedProcess[str]]
SCRIPT = Path(sys.executable).parent / "mini-studio"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config file path of this test's own (not written yet)."""
    return tmp_path / "mini-studio" / "config.toml"


@pytest.fixture
def run_cli(config_file: Path) -> RunCli:
    """Return `run(*args, stdin=None, env=None, timeout=...)`: the console script's exit code and output.

    The environment carries no MINI_STUDIO_* variable but MINI_STUDIO_CONFIG (this test's file), plus
    those passed in `env`; the terminal is wide, so tables are not cut.
    """
    assert SCRIPT.exists(), f"{SCRIPT} is missing: `pip install -e .` installs the console script"

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MINI_STUDIO_")}
        base.update({"MINI_STUDIO_CONFIG": str(config_file), "COLUMNS": "200", **(env or {})})
        return subprocess.run(
            [str(SCRIPT), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=base,
            timeout=timeout,
            check=False,
        )

    return run
