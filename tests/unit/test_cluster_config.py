"""`cluster.yaml` and `serve_config.yaml` are valid for the tools that read them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_matches_the_ray_cluster_launcher_schema() -> None:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]


def test_serve_config_matches_the_serve_schema_and_imports() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "studio.app.builder:build_app"
    assert config.http_options.port == 8000
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))
