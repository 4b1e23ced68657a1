"""OpenAI inference (`/v1/chat/completions`, `/v1/completions`) and the original design's `/predict`.

Bodies are read as JSON objects and passed through: the model server validates them with vLLM's own
OpenAI request models. Streaming answers are Server-Sent Events; an error after the stream has begun
(only possible after keep-alive comments, while a model starts) arrives as a final `data:` event in
OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from studio.api.deps import InferenceDep, PrincipalDep, StreamsDep
from studio.api.errors import status_of
from studio.errors import InvalidInput, StudioError, Unavailable
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


async def _answer(
    request: Request, principal: PrincipalDep, inference: InferenceDep, streams: StreamsDep, kind: Kind
) -> Any:
    body = await _json_object(request)
    if body.get("stream") is not True:
        return JSONResponse(await inference.complete(principal.client, kind, body))
    events = inference.stream(principal.client, kind, body)
    first = await anext(events)  # errors before the stream begins are plain HTTP errors
    stream = _continue(first, events, idle_timeout_s=streams.idle_timeout_s)
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


async def _continue(first: str, events: AsyncIterator[str], *, idle_timeout_s: float) -> AsyncIterator[str]:
    """Yield the stream's events; an error, or an engine silent for `idle_timeout_s`, ends it with an
    error event in OpenAI's shape."""
    yield first
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise Unavailable(
                    f"the model sent nothing for {idle_timeout_s:g} s; the stream was closed",
                    code="stream_idle_timeout",
                ) from None
            yield event
    except StudioError as exc:
        _, error_type = status_of(exc)
        error = {"message": exc.message, "type": error_type, "param": exc.param, "code": exc.code}
        yield f"data: {json.dumps({'error': error})}\n\n"


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, principal: PrincipalDep, inference: InferenceDep, streams: StreamsDep
) -> Any:
    return await _answer(request, principal, inference, streams, "chat")


@router.post("/completions", response_model=None)
async def completions(
    request: Request, principal: PrincipalDep, inference: InferenceDep, streams: StreamsDep
) -> Any:
    return await _answer(request, principal, inference, streams, "completion")


@seed_router.post("/{model:path}/predict")
async def predict(
    model: str, request: Request, principal: PrincipalDep, inference: InferenceDep
) -> dict[str, Any]:
    return await inference.predict(principal.client, model, await _json_object(request))
