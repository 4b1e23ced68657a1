"""Mini Studio: fine-tune and serve open LLMs on one Ray cluster.

Public surface: `Settings` and `build_app` (the target of `serve_config.yaml`). Imported lazily so
that light entrypoints (tests of pure code, tools) do not pay for Ray Serve's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studio.app.builder import build_app
    from studio.config import Settings

__all__ = ["Settings", "build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from studio.app.builder import build_app

        return build_app
    if name == "Settings":
        from studio.config import Settings

        return Settings
    raise AttributeError(name)
