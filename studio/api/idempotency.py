"""The `Idempotency-Key` header on create routes: a dependency that runs the create at most once.

A route takes `once: IdempotentDep` and returns `await once(create, status_code=...)`: without the
header the create simply runs; with it, `IdempotencyService` answers a repeat with the stored answer
(marked `Idempotent-Replayed: true`), another body under the key with 409 `idempotency_key_reused`, and a
repeat that arrives while the first still runs (after a short wait) with 409
`idempotency_key_in_progress` and `x-should-retry: true`.

Multipart creates (`POST /v1/files`, `/fine_tuning/upload-dataset`, upload parts) read their form
through `HashedForm` and return `await once.streamed(create, form)`: the key is claimed before the
body is read; the request's fingerprint is its file's bytes, file name and text fields (not the
multipart boundary, which a client draws anew for every send), hashed as the file is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import BaseModel

from studio.api.deps import PrincipalDep, ServicesDep
from studio.api.errors import studio_error_response
from studio.api.multipart import MultipartUpload
from studio.services.idempotency import Answer, IdempotencyService, KeyInProgress, request_hash

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def _response(answer: Answer) -> Response:
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return Response(
        answer.body, status_code=answer.status_code, media_type="application/json", headers=headers
    )


def _in_progress(exc: KeyInProgress) -> Response:
    response = studio_error_response(exc)
    response.headers["x-should-retry"] = "true"
    response.headers["Retry-After"] = "1"
    return response


class HashedForm:
    """A multipart form read once, hashing its file part on the way (`chunks`) or without keeping it
    (`drain`); `digest()` is the form's content once read: file bytes, file name and fields."""

    def __init__(self, form: MultipartUpload) -> None:
        self.form = form
        self._sha = hashlib.sha256()
        self._size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the file part's bytes (as `MultipartUpload.file_chunks`), hashing them."""
        async for chunk in self.form.file_chunks():
            self._sha.update(chunk)
            self._size += len(chunk)
            yield chunk

    async def drain(self) -> bytes:
        """Read the whole form, keeping nothing; return `digest()`."""
        async for _ in self.chunks():
            pass
        return self.digest()

    def digest(self) -> bytes:
        """Return what tells two forms apart (call once the file part has been read)."""
        content = {
            "file_sha256": self._sha.hexdigest(),
            "file_bytes": self._size,
            "filename": self.form.filename,
            "fields": self.form.fields,
        }
        return json.dumps(content, sort_keys=True).encode()


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
            return _in_progress(exc)
        return _response(result)

    async def streamed(
        self, create: Callable[[], Awaitable[BaseModel]], form: HashedForm, *, status_code: int = 200
    ) -> Response:
        """As calling it, for a create that reads `form` (through `form.chunks()`) as it runs."""
        if self._key is None or self._service is None:
            created = await create()
            return _response(Answer(status_code=status_code, body=created.model_dump_json(by_alias=True)))
        method, path = self._request.method, self._request.url.path

        async def answer() -> tuple[Answer, str]:
            created = await create()
            fingerprint = request_hash(method=method, path=path, body=form.digest())
            return Answer(status_code=status_code, body=created.model_dump_json(by_alias=True)), fingerprint

        async def fingerprint() -> str:
            return request_hash(method=method, path=path, body=await form.drain())

        try:
            result = await self._service.run_streamed(
                client_id=self._client_id,
                key=self._key,
                scope=f"{method} {path}",
                create=answer,
                fingerprint=fingerprint,
            )
        except KeyInProgress as exc:
            return _in_progress(exc)
        return _response(result)


async def idempotent(request: Request, principal: PrincipalDep, services: ServicesDep) -> Idempotent:
    return Idempotent(
        service=services.idempotency,
        request=request,
        client_id=principal.client.id,
        key=request.headers.get(HEADER),
    )


IdempotentDep = Annotated[Idempotent, Depends(idempotent)]
