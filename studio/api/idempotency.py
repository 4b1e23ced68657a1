"""The `Idempotency-Key` header on create routes: a dependency that runs the create at most once.

A route takes `once: IdempotentDep` and returns `await once(create, status_code=...)`: without the
header the create simply runs; with it, `IdempotencyService` answers a repeat with the stored answer
(marked `Idempotent-Replayed: true`), another body under the key with 409 `idempotency_key_reused`, and a
repeat that arrives while the first still runs (after a short wait) with 409
`idempotency_key_in_progress` and `x-should-retry: true`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import BaseModel

from studio.api.deps import PrincipalDep, ServicesDep
from studio.api.errors import studio_error_response
from studio.services.idempotency import Answer, IdempotencyService, KeyInProgress, request_hash

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def _response(answer: Answer) -> Response:
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return Response(
        answer.body, status_code=answer.status_code, media_type="application/json", headers=headers
    )


class Idempotent:
    """Runs one create of a request, keyed by the request's `Idempotency-Key` when it has one."""

    def __init__(
        self, *, service: IdempotencyService | None, request: Request, client_id: str, key: str | None
    ) -> None:
        self._service = service
        self._request = request
        self._client_id = client_id
        self._key = key

    async def __call__(
        self, create: Callable[[], Awaitable[BaseModel]], *, status_code: int = 200
    ) -> Response:
        """Return the create's answer as a JSON response (`status_code`), or the one stored for the key."""

        async def answer() -> Answer:
            created = await create()
            return Answer(status_code=status_code, body=created.model_dump_json(by_alias=True))

        if self._key is None or self._service is None:
            return _response(await answer())
        fingerprint = request_hash(
            method=self._request.method, path=self._request.url.path, body=await self._request.body()
        )
        try:
            result = await self._service.run(
                client_id=self._client_id, key=self._key, fingerprint=fingerprint, create=answer
            )
        except KeyInProgress as exc:
            response = studio_error_response(exc)
            response.headers["x-should-retry"] = "true"
            response.headers["Retry-After"] = "1"
            return response
        return _response(result)


async def idempotent(request: Request, principal: PrincipalDep, services: ServicesDep) -> Idempotent:
    return Idempotent(
        service=services.idempotency,
        request=request,
        client_id=principal.client.id,
        key=request.headers.get(HEADER),
    )


IdempotentDep = Annotated[Idempotent, Depends(idempotent)]
