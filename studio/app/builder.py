"""`build_app`: what `serve run serve_config.yaml` imports to build the application."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.serve import Application

from studio.app.admin_key import resolve_admin_key
from studio.app.ingress import StudioIngressDeployment
from studio.config import Settings, load_settings


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Return the Mini Studio application. `args` (from `serve_config.yaml`) override settings.

    Raises:
        SettingsError: a setting has a wrong value; the message names its environment variable.
    """
    settings = load_settings(**(args or {}))
    return build_app_from_settings(settings)


def build_app_from_settings(settings: Settings) -> Application:
    """Return the application for already-loaded settings (tests and benchmarks use this)."""
    admin = resolve_admin_key(settings)
    if admin.new_secret is not None:
        print(
            "\n  Mini Studio admin key (shown once, also saved to "
            f"{admin.path}, mode 0600):\n\n    {admin.new_secret}\n",
            file=sys.stderr,
            flush=True,
        )
    serving = settings.serving
    deployment = StudioIngressDeployment.options(
        num_replicas=serving.ingress_replicas,
        max_ongoing_requests=serving.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": serving.ingress_num_cpus},
        logging_config={"enable_access_log": serving.serve_access_log},
    )
    # When these settings were issued: the tracker actor, which outlives redeploys, takes the newest.
    return deployment.bind(settings, admin.key_hash, time.time())
