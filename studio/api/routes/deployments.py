"""Deployments: `/v1/deployments`, the admin's `/admin/deployments` and the original design's
`/inference/deploy/*` paths.

`router` carries the client's and the admin's paths (its routes name their full paths): the auth gate
checks the admin key on every path under `/admin`, and the admin routes check it again (`AdminDep`).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from studio.api.deps import AdminDep, DeploymentsDep, PrincipalDep
from studio.api.idempotency import IdempotentDep
from studio.schemas.deployments import (
    DeploymentAdminList,
    DeploymentAdminPublic,
    DeploymentCreate,
    DeploymentList,
    DeploymentPublic,
)

router = APIRouter(tags=["deployments"])
seed_router = APIRouter(prefix="/inference", tags=["deployments"])


@router.post("/v1/deployments", status_code=201, response_model=DeploymentPublic)
async def create_deployment(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep, once: IdempotentDep
) -> Response:
    """Deploy a model, or hold a shared base model's live deployment (`Idempotency-Key`: once per key)."""
    client = principal.client

    async def create() -> DeploymentPublic:
        return DeploymentPublic.of(await deployments.create(client, body), viewer=client.id)

    return await once(create, status_code=201)


@router.get("/v1/deployments")
async def list_deployments(principal: PrincipalDep, deployments: DeploymentsDep) -> DeploymentList:
    client = principal.client
    found = await deployments.list(client)
    return DeploymentList(data=[DeploymentPublic.of(d, viewer=client.id) for d in found])


@router.get("/v1/deployments/{deployment_id}")
async def retrieve_deployment(
    deployment_id: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    client = principal.client
    return DeploymentPublic.of(await deployments.get(client, deployment_id), viewer=client.id)


@router.delete("/v1/deployments/{deployment_id}")
async def delete_deployment(
    deployment_id: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    """Undeploy it; for a shared base, drop this client's hold (it stops once nobody holds it)."""
    client = principal.client
    return DeploymentPublic.of(await deployments.delete(client, deployment_id), viewer=client.id)


@router.post("/admin/deployments", status_code=201, tags=["admin"], dependencies=[AdminDep])
async def admin_create_deployment(
    body: DeploymentCreate, deployments: DeploymentsDep
) -> DeploymentAdminPublic:
    """Deploy a base model for every client allowed it (or hold its live deployment)."""
    return DeploymentAdminPublic.of_record(await deployments.admin_create(body))


@router.get("/admin/deployments", tags=["admin"], dependencies=[AdminDep])
async def admin_list_deployments(deployments: DeploymentsDep) -> DeploymentAdminList:
    return DeploymentAdminList(
        data=[DeploymentAdminPublic.of_record(d) for d in await deployments.admin_list()]
    )


@router.delete("/admin/deployments/{deployment_id}", tags=["admin"], dependencies=[AdminDep])
async def admin_delete_deployment(deployment_id: str, deployments: DeploymentsDep) -> DeploymentAdminPublic:
    """Undeploy any deployment now; a base's adapters are detached first (failed, with the reason)."""
    return DeploymentAdminPublic.of_record(await deployments.admin_delete(deployment_id))


@seed_router.post("/deploy/base", status_code=201)
async def deploy_base(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    client = principal.client
    return DeploymentPublic.of(await deployments.create(client, body, kind="base"), viewer=client.id)


@seed_router.post("/deploy/fine_tuned", status_code=201)
async def deploy_fine_tuned(
    body: DeploymentCreate, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    client = principal.client
    return DeploymentPublic.of(await deployments.create(client, body, kind="fine-tuned"), viewer=client.id)


@seed_router.delete("/deploy/{model:path}")
async def undeploy_model(
    model: str, principal: PrincipalDep, deployments: DeploymentsDep
) -> DeploymentPublic:
    client = principal.client
    return DeploymentPublic.of(await deployments.delete_model(client, model), viewer=client.id)
