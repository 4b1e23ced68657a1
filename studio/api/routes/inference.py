"""OpenAI inference (`/v1/chat/completions`, `/v1/completions`) and the original design's `/predict`.

Bodies are read as JSON objects and passed through: the model server validates them with vLLM's own
OpenAI request models. Streaming answers are Server-Sent Events; an error after the stream has begun
(only possible after keep-alive comments, while a model starts) arrives as a final `data:` event in
OpenAI's error shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from studio.api.deps import InferenceDep, PrincipalDep
from studio.api.errors import status_of
from studio.errors import InvalidInput, StudioError
from studio.services.inference import Kind

router = APIRouter(prefix="/v1", tags=["inference"])
seed_router = APIRouter(prefix="/inference", tags=["inference"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_json")
    return body


async def _answer(request: Request, principal: PrincipalDep, inference: InferenceDep, kind: Kind) -> Any:
    body = await _json_object(request)
    if body.get("stream") is not True:
        return JSONResponse(await inference.complete(principal.client, kind, body))
    events = inference.stream(principal.client, kind, body)
    first = await anext(events)  # errors before the stream begins are plain HTTP errors
    return StreamingResponse(_continue(first, events), media_type="text/event-stream", headers=SSE_HEADERS)


async def _continue(first: str, events: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    try:
        async for event in events:
            yield event
    except StudioError as exc:
        _, error_type = status_of(exc)
        error = {"message": exc.message, "type": error_type, "param": exc.param, "code": exc.code}
        yield f"data: {json.dumps({'error': error})}\n\n"


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, principal: PrincipalDep, inference: InferenceDep) -> Any:
    return await _answer(request, principal, inference, "chat")


@router.post("/completions", response_model=None)
async def completions(request: Request, principal: PrincipalDep, inference: InferenceDep) -> Any:
    return await _answer(request, principal, inference, "completion")


@seed_router.post("/{model:path}/predict")
async def predict(
    model: str, request: Request, principal: PrincipalDep, inference: InferenceDep
) -> dict[str, Any]:
    return await inference.predict(principal.client, model, await _json_object(request))
