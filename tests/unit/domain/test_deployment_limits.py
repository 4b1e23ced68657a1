"""Deployment caps (`domain/limits.py`), what a shared base asks of a live one (`services/shared_bases.py`),
and the largest node's GPUs as Ray reports its nodes (`backends/ray_cluster.summarize`)."""

from __future__ import annotations

import pytest

from studio.backends.ray_cluster import summarize
from studio.domain.limits import DeploymentCaps, DeploymentUse, check_deployment_caps, deployment_use
from studio.errors import QuotaExceeded
from studio.schemas.deployments import Deployment, DeploymentCreate, EngineOptions
from studio.services.shared_bases import option_differences

CAPS = DeploymentCaps(max_deployments=3, max_replicas=4, max_cpus=8, max_gpus=2)


def test_use_counts_replicas_at_their_max_and_nothing_for_adapters_or_failed_servers() -> None:
    server = deployment_use(own_server=True, running=True, max_replicas=3, num_cpus=0.5, num_gpus=2)
    assert server == DeploymentUse(deployments=1, replicas=3, cpus=1.5, gpus=6)
    adapter = deployment_use(own_server=False, running=True, max_replicas=3, num_cpus=0.5, num_gpus=2)
    failed = deployment_use(own_server=True, running=False, max_replicas=3, num_cpus=0.5, num_gpus=2)
    assert adapter == failed == DeploymentUse(deployments=1)
    assert server + adapter == DeploymentUse(deployments=2, replicas=3, cpus=1.5, gpus=6)


@pytest.mark.parametrize(
    ("used", "asked", "code", "param"),
    [
        (DeploymentUse(deployments=3), DeploymentUse(deployments=1), "deployment_limit", None),
        (DeploymentUse(1, 3, 1, 0), DeploymentUse(1, 2, 1, 0), "deployment_replicas_limit", "max_replicas"),
        (DeploymentUse(1, 1, 1, 1.5), DeploymentUse(1, 1, 1, 1), "deployment_gpus_limit", "num_gpus"),
        (DeploymentUse(1, 1, 7.5, 0), DeploymentUse(1, 1, 1, 0), "deployment_cpus_limit", "num_cpus"),
    ],
)
def test_each_cap_refuses_naming_itself(
    used: DeploymentUse, asked: DeploymentUse, code: str, param: str | None
) -> None:
    with pytest.raises(QuotaExceeded) as refused:
        check_deployment_caps(CAPS, used, asked)
    assert refused.value.code == code and refused.value.param == param
    assert refused.value.retry_after_s == 60


def test_a_request_at_the_caps_passes_and_a_request_for_nothing_more_always_does() -> None:
    check_deployment_caps(CAPS, DeploymentUse(2, 2, 6, 1), DeploymentUse(1, 2, 2, 1))  # exactly at each
    over = DeploymentUse(deployments=0, replicas=9, cpus=99, gpus=9)  # a client whose caps were lowered
    check_deployment_caps(CAPS, over, DeploymentUse(deployments=1))  # an adapter asks no resources


def base(**engine: object) -> Deployment:
    return Deployment(
        id="dep-1", model="acme/m", kind="base", base_model="acme/m", placement="server", target="serve",
        status="ready", min_replicas=1, max_replicas=1, target_ongoing_requests=8, num_cpus=0.5,
        num_gpus=0, engine=EngineOptions.model_validate(engine), created_at=0, client_id="client-a",
        model_source="/m", updated_at=0,
    )  # fmt: skip


def test_only_options_asked_explicitly_and_different_count_as_differences() -> None:
    deployed = base(max_model_len=256)
    same = DeploymentCreate.model_validate({"model": "acme/m", "engine": {"max_model_len": 256}})
    assert option_differences(deployed, same) == []
    # Defaults that differ from the deployed values ask nothing: only what the request names.
    assert option_differences(deployed, DeploymentCreate.model_validate({"model": "acme/m"})) == []
    nulls = {"model": "acme/m", "num_cpus": None, "engine": {"tensor_parallel_size": None}}
    assert option_differences(deployed, DeploymentCreate.model_validate(nulls)) == []
    other = {"model": "acme/m", "max_replicas": 2, "engine": {"max_model_len": 512, "dtype": "auto"}}
    assert option_differences(deployed, DeploymentCreate.model_validate(other)) == [
        ("max_replicas", 1, 2),
        ("engine.max_model_len", 256, 512),
    ]


def test_a_base_stored_before_holders_is_held_by_its_creator_and_an_empty_list_stays_empty() -> None:
    stored = base().model_dump(exclude={"holders"})
    assert Deployment.model_validate(stored).holders == ["client-a"]
    assert Deployment.model_validate({**stored, "holders": []}).holders == []
    fine_tune = {**stored, "kind": "fine-tuned"}
    assert Deployment.model_validate(fine_tune).holders == []


def test_the_largest_nodes_gpus_are_reported() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 4.0}},
        {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}},  # a dead node holds nothing
        {"Alive": True, "Resources": {"CPU": 4.0}},
    ]
    summary = summarize({"CPU": 20.0, "GPU": 6.0}, {"CPU": 20.0, "GPU": 6.0}, nodes)
    assert summary.largest_node_gpus == 4 and summary.gpus_total == 6
    assert (
        summarize({"CPU": 2.0}, {"CPU": 2.0}, [{"Alive": True, "Resources": {"CPU": 2.0}}]).largest_node_gpus
        == 0
    )
