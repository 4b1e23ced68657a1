"""One refusal, one answer on both model targets: what the Kubernetes target makes of vLLM's HTTP error
bodies (built here by vLLM's own handlers) equals what the Serve target makes of its model server's
`ModelRequestError`, and both end as OpenAI's 400 / 404 with the same `param` and `code`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request

from studio.api.errors import status_of
from studio.backends.k8s_servers import _error as kubernetes_error
from studio.backends.serve_models import _request_error as serve_error
from studio.errors import StudioError
from studio.serving.errors import ModelRequestError

QUESTION = [{"role": "user", "content": "hi"}]


def answer(exc: Exception) -> tuple[int, str, str | None, str]:
    """Return what the caller gets for a domain error: status, type, param, code."""
    assert isinstance(exc, StudioError)
    status, error_type = status_of(exc)
    return status, error_type, exc.param, exc.code


def vllm_http(body: object, status: int) -> Exception:
    response = httpx.Response(status, content=json.dumps(body).encode())
    return kubernetes_error(response, response.text)


async def vllm_validation_answer(exc: ValidationError) -> tuple[int, object]:
    """Return vLLM's HTTP server's answer to a body its request model refused (its own handler)."""
    from vllm.entrypoints.serve.exception_handling.handlers.validation import validation_exception_handler

    errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
    app = SimpleNamespace(state=SimpleNamespace(args=SimpleNamespace(log_error_stack=False)))
    request = Request({"type": "http", "app": app, "method": "POST", "path": "/", "headers": []})
    response = await validation_exception_handler(request, RequestValidationError(errors))
    return response.status_code, json.loads(bytes(response.body))


@pytest.mark.parametrize(
    "body",
    [
        {"messages": QUESTION, "n": "many"},  # a wrong type
        {"messages": "not a list"},
        {"messages": QUESTION, "stop": [1, 2]},  # a union field: pydantic's loc names each arm
    ],
)
async def test_an_invalid_body_is_the_same_400_on_both_targets(body: dict[str, object]) -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from studio.serving.server import _invalid_body

    with pytest.raises(ValidationError) as refused:
        ChatCompletionRequest.model_validate(body)
    status, vllm_body = await vllm_validation_answer(refused.value)
    assert status == 400
    on_kubernetes = answer(vllm_http(vllm_body, status))
    on_serve = answer(serve_error(_invalid_body(refused.value)))
    assert on_serve == on_kubernetes
    assert on_serve[:2] == (400, "invalid_request_error") and on_serve[3] == "invalid_value"
    assert on_serve[2] and not on_serve[2].startswith("body"), on_serve


@pytest.mark.parametrize(
    ("parameter", "code"),
    [
        ("temperature", "invalid_value"),
        ("input_tokens", "context_length_exceeded"),
        (None, "invalid_request"),
    ],
)
def test_a_value_vllm_refuses_is_the_same_400_on_both_targets(parameter: str | None, code: str) -> None:
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
    from vllm.exceptions import VLLMValidationError

    refusal = VLLMValidationError("out of range", parameter=parameter)
    vllm_body = create_error_response(refusal).model_dump()
    on_kubernetes = answer(vllm_http(vllm_body, vllm_body["error"]["code"]))
    # The Serve model server raises this for the same VLLMValidationError (studio/serving/server.py).
    on_serve = answer(serve_error(ModelRequestError(400, str(refusal), param=refusal.parameter)))
    assert on_serve == on_kubernetes == (400, "invalid_request_error", parameter, code)


def test_an_unknown_model_is_the_same_404_and_a_crash_a_503() -> None:
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
    from vllm.exceptions import VLLMNotFoundError

    vllm_body = create_error_response(VLLMNotFoundError("The model `x` does not exist.")).model_dump()
    on_kubernetes = answer(vllm_http(vllm_body, 404))
    on_serve = answer(serve_error(ModelRequestError(404, "the adapter 'x' is not known")))
    assert on_serve == on_kubernetes == (404, "invalid_request_error", "model", "model_not_found")
    crashed = create_error_response(RuntimeError("engine dead")).model_dump()
    assert answer(vllm_http(crashed, 500))[:2] == (503, "server_error")
    assert answer(serve_error(ModelRequestError(500, "engine dead")))[:2] == (503, "server_error")
