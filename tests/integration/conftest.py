"""A real Ray cluster (own temp dir, never `ray stop`) running the Serve app on embedded defaults.

The fixtures (`ray_cluster`, `serve_app`, `http`) live in `tests/serve_fixtures.py`, a plugin shared
with tests/browser; the names below stay importable from here.
"""

from __future__ import annotations

from tests.serve_fixtures import ServeApp, data_dir_of

__all__ = ["ServeApp", "data_dir_of"]
