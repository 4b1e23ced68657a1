"""Deployments: `/v1/deployments` and the original design's `/inference/deploy/*` paths."""

from __future__ import annotations

from fastapi import APIRouter, Response

from studio.api.deps import DeploymentsDep, PrincipalDep
from studio.api.idempotency import IdempotentDep
from studio.schemas.deployments import DeploymentCreate, DeploymentList, DeploymentPublic

router = APIRouter(prefix="/v1", tags=["deployments"])
seed_router = APIRouter(prefix="/inference", tags=["deployments"])


@router.post("/deployments", status_code=201, response_model=DeploymentPublic)
async def create_deployment(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep, once: IdempotentDep
) -> Response:
    """Deploy a model (`Idempotency-Key`: once per key)."""

    async def create() -> DeploymentPublic:
        return DeploymentPublic.of(await deployments.create(principal.client, body))

    return await once(create, status_code=201)


@router.get("/deployments")
async def list_deployments(principal: PrincipalDep, deployments: DeploymentsDep) -> DeploymentList:
    return DeploymentList(data=[DeploymentPublic.of(d) for d in await deployments.list(principal.client)])


@router.get("/deployments/{deployment_id}")
async def retrieve_deployment(
    deployment_id: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    return DeploymentPublic.of(await deployments.get(principal.client, deployment_id))


@router.delete("/deployments/{deployment_id}")
async def delete_deployment(
    deployment_id: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    return DeploymentPublic.of(await deployments.delete(principal.client, deployment_id))


@seed_router.post("/deploy/base", status_code=201)
async def deploy_base(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    return DeploymentPublic.of(await deployments.create(principal.client, body, kind="base"))


@seed_router.post("/deploy/fine_tuned", status_code=201)
async def deploy_fine_tuned(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    return DeploymentPublic.of(await deployments.create(principal.client, body, kind="fine-tuned"))


@seed_router.delete("/deploy/{model:path}")
async def undeploy_model(
    model: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    return DeploymentPublic.of(await deployments.delete_model(principal.client, model))
