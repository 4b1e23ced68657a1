"""What the Serve target builds for a model server, checked without a GPU or a cluster: vLLM's engine
arguments and the Serve deployment options (a placement group per replica, one GPU bundle per worker)
for a 2-GPU request, as the deployment service plans it. Serve's own option checks run on the result."""

from __future__ import annotations

from typing import Any

import pytest
from ray import serve

from studio.backends.serve_models import ServeModelServers, deployment_options
from studio.domain.estimate import shape_from_config
from studio.domain.serving_plan import ServingRequest, plan_deployment
from studio.schemas.deployments import Deployment, DeploymentLayout, EngineOptions
from studio.serving.engine import engine_args, engine_env
from studio.serving.server import ModelServer
from studio.serving.spec import ModelStore

LLAMA_31_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
}  # fmt: skip
SCRATCH = "/tmp/ms-scratch"


def planned(*, num_gpus: float, num_cpus: float = 2.0, **engine: Any) -> Deployment:
    """A deployment record as `DeploymentService.create` stores it: sizes resolved by the planner."""
    options = EngineOptions(**engine)
    plan = plan_deployment(
        shape_from_config(LLAMA_31_8B),
        ServingRequest(
            num_gpus=num_gpus,
            tensor_parallel_size=options.tensor_parallel_size,
            pipeline_parallel_size=options.pipeline_parallel_size,
            max_model_len=options.max_model_len,
            quantization=options.quantization,
        ),
    )
    sizes = {
        "tensor_parallel_size": plan.layout.tensor_parallel_size,
        "pipeline_parallel_size": plan.layout.pipeline_parallel_size,
    }
    return Deployment(
        id="dep-1", model="meta-llama/Llama-3.1-8B", kind="base", base_model="meta-llama/Llama-3.1-8B",
        placement="server", target="serve", status="deploying", app_name="ms-model-llama", min_replicas=1,
        max_replicas=2, target_ongoing_requests=8, num_cpus=num_cpus, num_gpus=num_gpus,
        engine=options.model_copy(update=sizes),
        layout=DeploymentLayout.of(plan, num_gpus=num_gpus, gpu_memory_gib=80), client_id="c1",
        model_source="/models/llama-3.1-8b", created_at=1, updated_at=1,
    )  # fmt: skip


def servers() -> ServeModelServers:
    return ServeModelServers(scratch_dir=SCRATCH, models_dir=None, timeout_s=5)


def serve_checked(options: dict[str, Any]) -> Any:
    """Return Serve's replica config for `options` (Serve validates bundles against the actor's needs)."""
    server: Any = serve.deployment(ModelServer)
    return server.options(**options)._replica_config


def test_a_2_gpu_request_is_one_engine_over_two_ray_workers() -> None:
    deployment = planned(num_gpus=2)
    assert (deployment.engine.tensor_parallel_size, deployment.engine.pipeline_parallel_size) == (2, 1)
    args = engine_args(servers().spec(deployment))
    assert args["tensor_parallel_size"] == 2 and args["pipeline_parallel_size"] == 1
    assert args["distributed_executor_backend"] == "ray"
    assert args["gpu_memory_utilization"] == 0.9
    assert "kv_cache_memory_bytes" not in args and "enforce_eager" not in args  # CPU-only settings


def test_a_2_gpu_replica_gets_a_placement_group_of_one_gpu_bundle_per_worker() -> None:
    options = deployment_options(planned(num_gpus=2, num_cpus=2), scratch_dir=SCRATCH)
    # The replica actor sits in the first bundle with worker 0 and reserves no GPU itself.
    assert options["placement_group_bundles"] == [{"CPU": 2, "GPU": 1}, {"GPU": 1}]
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"]["num_gpus"] == 0 and options["ray_actor_options"]["num_cpus"] == 2
    assert "VLLM_CPU_OMP_THREADS_BIND" not in options["ray_actor_options"]["runtime_env"]["env_vars"]
    replica = serve_checked(options)
    assert replica.placement_group_bundles == [{"CPU": 2, "GPU": 1}, {"GPU": 1}]
    assert replica.placement_group_strategy == "STRICT_PACK"


def test_pipeline_stages_may_span_nodes() -> None:
    deployment = planned(num_gpus=4, pipeline_parallel_size=2)
    args = engine_args(servers().spec(deployment))
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (2, 2)
    options = deployment_options(deployment, scratch_dir=SCRATCH)
    assert options["placement_group_bundles"] == [{"CPU": 2, "GPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]
    assert options["placement_group_strategy"] == "PACK"
    serve_checked(options)


@pytest.mark.parametrize("num_gpus", [1.0, 0.5])
def test_one_gpu_or_less_is_reserved_by_the_replica_itself(num_gpus: float) -> None:
    deployment = planned(num_gpus=num_gpus, max_model_len=8192)
    options = deployment_options(deployment, scratch_dir=SCRATCH)
    assert "placement_group_bundles" not in options
    assert options["ray_actor_options"]["num_gpus"] == num_gpus
    args = engine_args(servers().spec(deployment))
    assert args["tensor_parallel_size"] == 1 and "distributed_executor_backend" not in args
    serve_checked(options)


def test_on_cpu_tensor_parallel_workers_are_processes_of_the_replica() -> None:
    deployment = planned(num_gpus=0, tensor_parallel_size=2)
    args = engine_args(servers().spec(deployment))
    assert args["tensor_parallel_size"] == 2 and args["distributed_executor_backend"] == "mp"
    assert args["enforce_eager"] is True and args["kv_cache_memory_bytes"] > 0
    options = deployment_options(deployment, scratch_dir=SCRATCH)
    assert "placement_group_bundles" not in options and options["ray_actor_options"]["num_gpus"] == 0
    env = options["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    single = engine_args(servers().spec(planned(num_gpus=0)))
    assert single["distributed_executor_backend"] == "uni" and single["tensor_parallel_size"] == 1
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(SCRATCH)


def test_fp8_reaches_the_engine() -> None:
    args = engine_args(servers().spec(planned(num_gpus=1, quantization="fp8", kv_cache_dtype="fp8")))
    assert args["quantization"] == "fp8" and args["kv_cache_dtype"] == "fp8"
    plain = engine_args(servers().spec(planned(num_gpus=1)))
    assert "quantization" not in plain and "kv_cache_dtype" not in plain


def test_a_record_from_before_planning_runs_one_worker() -> None:
    old = planned(num_gpus=1).model_copy(update={"engine": EngineOptions(), "layout": None, "num_gpus": 2.0})
    assert engine_args(servers().spec(old))["tensor_parallel_size"] == 1
    assert "placement_group_bundles" not in deployment_options(old, scratch_dir=SCRATCH)


def test_a_full_fine_tune_s_s3_copy_and_the_node_cache_reach_its_replicas() -> None:
    """No shared file system: the spec names the model's `s3://` copy and where S3 is; the replicas get the
    S3 keys in their environment (never in the spec, which Serve shows in its config)."""
    store = ModelStore(
        endpoint_url="http://s3:9000", region="us-east-1", timeout_s=10, cache_max_bytes=1 << 30
    )
    keys = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    with_s3 = ServeModelServers(
        scratch_dir=SCRATCH, models_dir=None, timeout_s=5, store=store, store_env=keys
    )
    uri = "s3://bucket/client/jobs/ftjob-1/final"
    deployment = planned(num_gpus=0).model_copy(update={"model_uri": uri})
    spec = with_s3.spec(deployment)
    assert (spec.model_source, spec.model_uri, spec.store) == ("/models/llama-3.1-8b", uri, store)
    assert "secret" not in repr(spec)
    options = deployment_options(deployment, scratch_dir=SCRATCH, env=keys)
    assert options["ray_actor_options"]["runtime_env"]["env_vars"] == engine_env(SCRATCH) | keys
    serve_checked(options)
    assert servers().spec(deployment).store is None  # no bucket: paths only, as before


def test_a_base_deployed_without_adapters_runs_its_engine_without_lora() -> None:
    with_adapters = engine_args(servers().spec(planned(num_gpus=0)))
    assert with_adapters["enable_lora"] is True and with_adapters["max_loras"] == 4
    assert with_adapters["worker_extension_cls"]  # the CPU kernels' fix for adapter-less rows

    spec = servers().spec(planned(num_gpus=0, max_adapters=0))
    assert spec.adapters is False
    args = engine_args(spec)
    assert not {"enable_lora", "max_loras", "max_cpu_loras", "worker_extension_cls"} & set(args)
