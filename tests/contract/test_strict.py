"""The strict checker itself: it must catch each way a body can differ from OpenAI's model."""

from __future__ import annotations

from typing import Any

from openai.types import FileObject
from openai.types.chat import ChatCompletion

from tests.contract.strict import openai_shape_problems

FILE: dict[str, Any] = {
    "id": "file-1", "object": "file", "bytes": 10, "created_at": 1, "filename": "a.jsonl",
    "purpose": "fine-tune", "status": "processed", "expires_at": None, "status_details": None,
}  # fmt: skip
CHAT: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{
        "index": 0, "finish_reason": "tool_calls", "logprobs": None,
        "message": {
            "role": "assistant", "content": None, "refusal": None, "annotations": None, "audio": None,
            "function_call": None,
            "tool_calls": [
                {"id": "call-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    }],
    "service_tier": None, "system_fingerprint": None, "metadata": None, "moderation": None,
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
              "completion_tokens_details": None, "prompt_tokens_details": None},
}  # fmt: skip


def test_a_matching_body_has_no_problems() -> None:
    assert openai_shape_problems(FILE, FileObject) == []
    assert openai_shape_problems(CHAT, ChatCompletion) == []


def test_a_missing_null_is_caught_at_any_depth() -> None:
    body = {key: value for key, value in FILE.items() if key != "status_details"}
    assert openai_shape_problems(body, FileObject) == ["status_details: missing (OpenAI's FileObject has it)"]
    chat = {**CHAT, "choices": [{**CHAT["choices"][0], "message": {**CHAT["choices"][0]["message"]}}]}
    del chat["choices"][0]["message"]["refusal"]
    assert openai_shape_problems(chat, ChatCompletion) == [
        "choices[].message.refusal: missing (OpenAI's ChatCompletionMessage has it)"
    ]
    assert openai_shape_problems(chat, ChatCompletion, omitted={"choices[].message.refusal"}) == []


def test_an_extra_key_is_caught_unless_named() -> None:
    body = {**FILE, "details": {"rows": 3}}
    assert openai_shape_problems(body, FileObject) == ["details: not a field of OpenAI's FileObject"]
    assert openai_shape_problems(body, FileObject, extras={"details"}) == []
    chat = {**CHAT, "choices": [{**CHAT["choices"][0], "stop_reason": None}]}
    assert openai_shape_problems(chat, ChatCompletion) == [
        "choices[].stop_reason: not a field of OpenAI's Choice"
    ]


def test_wrong_types_and_values_are_caught_strictly() -> None:
    assert openai_shape_problems({**FILE, "bytes": "10"}, FileObject) == [
        "bytes: Input should be a valid integer"
    ]
    assert openai_shape_problems({**FILE, "created_at": 1.0}, FileObject) == [
        "created_at: Input should be a valid integer"
    ]
    problems = openai_shape_problems({**FILE, "status": "ready"}, FileObject)
    assert len(problems) == 1 and problems[0].startswith("status: Input should be")
    assert openai_shape_problems({**FILE, "expires_at": None, "bytes": None}, FileObject) == [
        "bytes: Input should be a valid integer",
        "bytes: null where OpenAI's shape has none",
    ]


def test_a_union_is_read_as_the_arm_it_fits() -> None:
    # A tool call is a function call or a custom one: a custom call's keys are not a function call's.
    custom = {"id": "call-2", "type": "custom", "custom": {"name": "g", "input": "x"}}
    message = {**CHAT["choices"][0]["message"], "tool_calls": [custom]}
    chat = {**CHAT, "choices": [{**CHAT["choices"][0], "message": message}]}
    assert openai_shape_problems(chat, ChatCompletion) == []
    broken = {**custom, "custom": {"name": "g"}}
    message = {**message, "tool_calls": [broken]}
    problems = openai_shape_problems(
        {**CHAT, "choices": [{**CHAT["choices"][0], "message": message}]}, ChatCompletion
    )
    assert "choices[].message.tool_calls[].custom.input: missing (OpenAI's Custom has it)" in problems
