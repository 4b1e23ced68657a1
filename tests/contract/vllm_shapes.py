"""What the inference answers may differ by from OpenAI's models, derived from vLLM's own response models.

Both model targets send vLLM's answers: the Kubernetes target forwards its OpenAI server's bodies and
events, the Serve target dumps the same response models whole (non-streaming) and passes vLLM's own
events through (streaming). So the fields vLLM adds (`stop_reason`, `token_ids`, `prompt_logprobs`...) are
allowed as extras, read from vLLM's models rather than listed by hand; any other key fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Exceptions:
    omitted: frozenset[str]
    extras: frozenset[str]


def _keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _differences(pairs: list[tuple[str, type[BaseModel], type[BaseModel]]]) -> Exceptions:
    """`pairs`: (path, vLLM's model, OpenAI's model) for each object of the answer."""
    omitted: set[str] = set()
    extras: set[str] = set()
    for path, vllm, openai in pairs:
        prefix = f"{path}." if path else ""
        extras |= {prefix + key for key in _keys(vllm) - _keys(openai)}
        omitted |= {prefix + key for key in _keys(openai) - _keys(vllm)}
    return Exceptions(frozenset(omitted), frozenset(extras))


def chat_completion() -> Exceptions:
    """`chat.completion`: every OpenAI field present, nulls included; vLLM's additions allowed."""
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from vllm.entrypoints.openai.chat_completion import protocol as chat

    found = _differences([
        ("", chat.ChatCompletionResponse, ChatCompletion),
        ("choices[]", chat.ChatCompletionResponseChoice, Choice),
        ("choices[].message", chat.ChatMessage, ChatCompletionMessage),
    ])  # fmt: skip
    # A message that calls no tool has no `tool_calls` key, in OpenAI's answers as in vLLM's (its
    # serializer drops an empty list); with calls, the key is there, and `content` beside it is null.
    return Exceptions(found.omitted | {"choices[].message.tool_calls"}, found.extras)


def text_completion() -> Exceptions:
    """`text_completion`: every OpenAI field present; vLLM's additions allowed."""
    from openai.types import Completion, CompletionChoice
    from vllm.entrypoints.openai.completion import protocol as completion

    return _differences([
        ("", completion.CompletionResponse, Completion),
        ("choices[]", completion.CompletionResponseChoice, CompletionChoice),
    ])  # fmt: skip


# A chunk carries only what it sets (vLLM dumps events with `exclude_unset`, on both targets); OpenAI's
# chunks also leave out these: a delta has the keys of what it adds (`role` on the first chunk only),
# `usage` comes with `stream_options.include_usage`, the fingerprint and tier on the terminal chunk.
CHUNK_OMITTED = frozenset({
    "service_tier", "system_fingerprint", "usage", "obfuscation", "moderation",
    "choices[].delta.role", "choices[].delta.content", "choices[].delta.refusal",
    "choices[].delta.tool_calls", "choices[].delta.function_call", "choices[].delta.audio",
})  # fmt: skip


def chat_completion_chunk() -> Exceptions:
    """`chat.completion.chunk`: OpenAI's streaming omissions (`CHUNK_OMITTED`); vLLM's additions."""
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
    from vllm.entrypoints.openai.chat_completion import protocol as chat

    found = _differences([
        ("", chat.ChatCompletionStreamResponse, ChatCompletionChunk),
        ("choices[]", chat.ChatCompletionResponseStreamChoice, Choice),
        ("choices[].delta", chat.DeltaMessage, ChoiceDelta),
    ])  # fmt: skip
    return Exceptions(CHUNK_OMITTED, found.extras)
