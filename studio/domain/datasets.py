"""Streaming validation and statistics of a JSONL fine-tuning dataset.

The caller reads the file and feeds its bytes in chunks of any size; nothing here does I/O. Three
shapes of example are recognised, each one JSON object per line:

- chat: {"messages": [{"role": ..., "content": ...}, ...]}
- prompt_completion: {"prompt": "...", "completion": "..."}
- preference (OpenAI DPO): {"input": {"messages": [...]}, "preferred_output": [...],
  "non_preferred_output": [...]}

Token counts use `count_tokens` when given, else `estimate_tokens`. A chat example costs
sum(count_tokens(message text) + 4) + 2: the +4 per message and +2 per example are the usual chat
template overhead (role markers, separators, the assistant reply primer). A message's text is its
content (text parts joined) plus, for assistant tool calls, each call's function name and arguments.
A prompt_completion example costs count(prompt) + count(completion). A preference example costs its
input messages as a chat example plus its preferred output messages (count + 4 each); the
non-preferred output is left out of `tokens_total`. Trained tokens are the text tokens the loss is
computed on, without template overhead: assistant messages whose weight is not 0 (chat), the
completion (prompt_completion), and the preferred output (preference).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

# Distribution and DatasetStats are re-exported: they are part of this module's report.
from studio.domain.dataset_stats import DatasetStats as DatasetStats
from studio.domain.dataset_stats import Distribution as Distribution
from studio.domain.dataset_stats import StatsAccumulator

DatasetFormat = Literal["chat", "prompt_completion", "preference"]
# The formats each fine-tuning method type (OpenAI's `method.type`) trains on.
FORMATS_OF_METHOD: dict[str, tuple[DatasetFormat, ...]] = {
    "supervised": ("chat", "prompt_completion"),
    "dpo": ("preference",),
}
TokenCounter = Callable[[str], int]

ESTIMATE_LABEL = "estimate:chars/4"
ROLES = ("system", "user", "assistant", "tool")
_ROLE_SET = frozenset(ROLES)
_ROLE_LIST = ", ".join(ROLES)
_DETECT_HINT = (
    'expected "messages", or "prompt"+"completion", or "input"+"preferred_output"+"non_preferred_output"'
)


def _reject_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity, but they are not JSON and trainers' parsers reject them.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)

# (code, message, field) of one error found in a row, before the line number is attached.
_Error = tuple[str, str, str | None]
# (tokens including the per-message overhead, trained tokens, roles, whether a system message is there)
_Totals = tuple[int, int, list[str], bool]


class LineIssue(BaseModel):
    """One error or warning; `line` is 1-based, None for file-level issues."""

    line: int | None
    code: str
    message: str
    field: str | None = None


class ValidationReport(BaseModel):
    """Outcome of validating a whole file: format, errors, aggregated warnings and statistics."""

    format: DatasetFormat | None
    valid: bool
    error_count: int
    errors: list[LineIssue]
    warnings: list[LineIssue]
    stats: DatasetStats


@dataclass(frozen=True)
class ValidationLimits:
    """How many errors to keep, the longest line accepted (bytes, without its newline), and the
    context length beyond which examples are reported as truncated."""

    max_errors: int = 100
    max_line_bytes: int = 16 * 1024 * 1024
    context_length: int = 4096

    def __post_init__(self) -> None:
        if self.max_errors < 0 or self.max_line_bytes < 1 or self.context_length < 1:
            raise ValueError(f"invalid validation limits: {self}")


def estimate_tokens(text: str) -> int:
    """Return ceil(len(text) / 4), OpenAI's rule of thumb of ~4 characters per token for English."""
    return (len(text) + 3) // 4


# Types named as JSON names them: the user wrote JSON, not Python. json.loads makes only these types.
_JSON_TYPES = {
    dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
    bool: "a boolean", type(None): "null",
}  # fmt: skip


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "a value")


def _show(value: object) -> str:
    # Quote the offending value, but never paste a huge one into a message.
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _content_text(content: object, present: bool) -> tuple[str, str | None]:
    """Return (text, None) for valid content other than a non-empty string, else ("", problem)."""
    if isinstance(content, list):
        if not content:
            return "", "is an empty array"
        texts: list[str] = []
        for j, part in enumerate(content):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                return "", f'part {j} must be {{"type": "text", "text": <string>}}, got {_show(part)}'
            texts.append(part["text"])
        return "".join(texts), None
    if content == "":
        return "", "is an empty string"
    if not present:
        return "", "is missing"
    return "", f"must be a non-empty string or an array of text parts, not {_json_type(content)}"


def _tool_calls_text(tool_calls: list[object]) -> str:
    # The model is trained to emit the calls, so their names and arguments are tokens of the message.
    texts: list[str] = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))
    return "".join(texts)


def _check_weight(weight: object, role: object, at: str, errs: list[_Error]) -> None:
    """Append an error unless `weight` is an integer 0 or 1 on an assistant message."""
    if role != "assistant":
        errs.append(("invalid_weight", f"{at} is only allowed on assistant messages, not {_show(role)}", at))
    elif type(weight) is not int or weight not in (0, 1):  # bools and 1.0 are not weights
        errs.append(("invalid_weight", f"{at} must be 0 or 1, not {_show(weight)}", at))


def _check_messages(
    messages: object, path: str, count: TokenCounter, errs: list[_Error], require_assistant: bool
) -> _Totals:
    """Return the totals of a chat message list, appending every problem found to `errs`."""
    if messages is None or messages == []:
        errs.append(("missing_messages", f'"{path}" is missing, null or empty', path))
        return 0, 0, [], False
    if not isinstance(messages, list):
        message = f'"{path}" must be an array of messages, not {_json_type(messages)}'
        errs.append(("invalid_type", message, path))
        return 0, 0, [], False
    tokens = trained = assistants = trainable = 0
    roles: list[str] = []
    for i, msg in enumerate(messages):
        # The happy path only does dict lookups; the "messages[i]" path is formatted only for errors.
        if not isinstance(msg, dict):
            at = f"{path}[{i}]"
            errs.append(("invalid_type", f"{at} must be an object, not {_json_type(msg)}", at))
            continue
        role = msg.get("role")
        # isinstance first: a list or object role is unhashable and would break the set lookup.
        if isinstance(role, str) and role in _ROLE_SET:
            roles.append(role)
        else:
            shown = "missing" if "role" not in msg else _show(role)
            at = f"{path}[{i}].role"
            errs.append(("unrecognized_role", f"{at} is {shown}; allowed roles: {_ROLE_LIST}", at))
        content = msg.get("content")
        tool_calls = msg.get("tool_calls")
        if content.__class__ is str and content:
            text = content  # the common case, kept first and cheap
        elif role == "assistant" and tool_calls and isinstance(tool_calls, list) and content in (None, ""):
            text = ""
        else:
            text, problem = _content_text(content, "content" in msg)
            if problem is not None:
                at = f"{path}[{i}].content"
                errs.append(("missing_content", f"{at} {problem}", at))
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                at = f"{path}[{i}].tool_calls"
                errs.append(("invalid_type", f"{at} must be an array, not {_json_type(tool_calls)}", at))
            elif tool_calls:
                text += _tool_calls_text(tool_calls)
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if not (isinstance(call_id, str) and call_id):
                at = f"{path}[{i}].tool_call_id"
                message = f"{at} must be a non-empty string for a tool message"
                errs.append(("missing_tool_call_id", message, at))
        n = count(text)
        tokens += n + 4
        if role == "assistant":
            assistants += 1
            weight = msg.get("weight", 1)
            if weight != 0:
                trainable += 1
                trained += n
        if "weight" in msg:
            _check_weight(msg["weight"], role, f"{path}[{i}].weight", errs)
    if require_assistant:
        if assistants == 0:
            errs.append(("no_assistant_message", f'"{path}" has no assistant message to train on', path))
        elif trainable == 0:
            message = f'all {assistants} assistant messages in "{path}" have weight 0, so nothing is trained'
            errs.append(("no_trainable_message", message, path))
    return tokens, trained, roles, "system" in roles


def _check_outputs(outputs: object, path: str, count: TokenCounter, errs: list[_Error]) -> tuple[int, int]:
    """Return (tokens with per-message overhead, text tokens) of a preference output list."""
    if not isinstance(outputs, list):
        message = f'"{path}" must be an array of messages, not {_json_type(outputs)}'
        errs.append(("invalid_type", message, path))
        return 0, 0
    if not outputs:
        errs.append(("missing_content", f'"{path}" is an empty array', path))
        return 0, 0
    tokens = texts = 0
    for i, msg in enumerate(outputs):
        at = f"{path}[{i}]"
        if not isinstance(msg, dict):
            errs.append(("invalid_type", f"{at} must be an object, not {_json_type(msg)}", at))
            continue
        role = msg.get("role")
        if role != "assistant":
            shown = "missing" if "role" not in msg else _show(role)
            errs.append(("unrecognized_role", f'{at}.role is {shown}; it must be "assistant"', f"{at}.role"))
        content = msg.get("content")
        if not (isinstance(content, str) and content):
            problem = (
                f"must be a non-empty string, got {_show(content)}" if "content" in msg else "is missing"
            )
            errs.append(("missing_content", f"{at}.content {problem}", f"{at}.content"))
            continue
        n = count(content)
        tokens += n + 4
        texts += n
    return tokens, texts


def _check_prompt_completion(
    prompt: object, completion: object, count: TokenCounter, errs: list[_Error]
) -> tuple[int, int]:
    """Return (tokens, trained tokens) of a prompt_completion example, appending its problems to `errs`."""
    if not isinstance(prompt, str):
        errs.append(("missing_content", f'"prompt" must be a string, not {_json_type(prompt)}', "prompt"))
    if completion == "" or not isinstance(completion, str):
        problem = (
            "is an empty string" if completion == "" else f"must be a string, not {_json_type(completion)}"
        )
        errs.append(("missing_content", f'"completion" {problem}', "completion"))
    if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
        return 0, 0
    trained = count(completion)
    return count(prompt) + trained, trained


class DatasetValidator:
    """Validates a JSONL dataset fed as byte chunks; call `finish` once at the end for the report."""

    def __init__(
        self,
        limits: ValidationLimits = ValidationLimits(),
        count_tokens: TokenCounter | None = None,
        tokenizer_name: str | None = None,
    ) -> None:
        self._limits = limits
        self._max_line = limits.max_line_bytes
        self._count: TokenCounter = count_tokens or estimate_tokens
        # The name only describes a counter the caller supplied; without one the estimate is used.
        self._token_counting = ESTIMATE_LABEL if count_tokens is None else (tokenizer_name or "custom")
        self._stats = StatsAccumulator(limits.context_length)
        self._pending = bytearray()  # the current partial line, never more than max_line_bytes
        self._overlong = False  # the current line passed max_line_bytes: its bytes are being dropped
        self._overlong_bytes = 0
        self._line_no = 0
        self._rows = 0
        self._format: DatasetFormat | None = None
        self._format_line = 0
        self._error_count = 0
        self._errors: list[LineIssue] = []
        self._report: ValidationReport | None = None

    def feed(self, chunk: bytes) -> None:
        """Validate every line completed by `chunk`, keeping the unfinished last one; returns None."""
        if self._report is not None:
            raise RuntimeError("feed() called after finish()")
        start = 0
        if self._pending or self._overlong:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._extend_partial(chunk, 0, len(chunk))
                return
            self._extend_partial(chunk, 0, newline)
            self._end_partial()
            start = newline + 1
        last = chunk.rfind(b"\n")
        if last >= start:
            # One C-level split instead of a find() per line; the copies it makes are cheap next to
            # json.loads of the same bytes.
            for raw in chunk[start:last].split(b"\n"):
                self._line(raw)
            start = last + 1
        if start < len(chunk):
            self._extend_partial(chunk, start, len(chunk))

    def finish(self) -> ValidationReport:
        """Flush the last line (a file need not end with a newline) and return the report."""
        if self._report is not None:
            return self._report
        if self._pending or self._overlong:
            self._end_partial()
        if self._rows == 0:
            message = "the file has no examples: it is empty or has only blank lines"
            self._error(None, "empty_file", message, None)
        stats = self._stats
        report = ValidationReport(
            format=self._format,
            valid=self._error_count == 0 and stats.valid_rows > 0,
            error_count=self._error_count,
            errors=self._errors,
            warnings=[LineIssue(line=line, code=code, message=msg) for line, code, msg in stats.warnings()],
            stats=stats.stats(self._rows, self._token_counting),
        )
        self._report = report
        return report

    def _extend_partial(self, chunk: bytes, start: int, end: int) -> None:
        if self._overlong:
            self._overlong_bytes += end - start
            return
        size = len(self._pending) + end - start
        if size > self._max_line:
            # Give the buffer back at once: a 1 GB line must cost no more than max_line_bytes.
            self._overlong, self._overlong_bytes, self._pending = True, size, bytearray()
            return
        self._pending += memoryview(chunk)[start:end]

    def _end_partial(self) -> None:
        if self._overlong:
            self._line_no += 1
            self._rows += 1
            self._too_long(self._line_no, self._overlong_bytes)
            self._overlong, self._overlong_bytes = False, 0
        else:
            line, self._pending = self._pending, bytearray()
            self._line(line)

    def _too_long(self, line_no: int, size: int) -> None:
        message = f"line is {size} bytes, over the limit of {self._max_line} bytes; it was not validated"
        self._error(line_no, "line_too_long", message, None)

    def _error(self, line: int | None, code: str, message: str, field: str | None) -> None:
        self._error_count += 1
        if len(self._errors) < self._limits.max_errors:
            self._errors.append(LineIssue(line=line, code=code, message=message, field=field))

    def _line(self, raw: bytes | bytearray) -> None:
        self._line_no += 1
        line_no = self._line_no
        if len(raw) > self._max_line:
            self._rows += 1
            self._too_long(line_no, len(raw))
            return
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():
            return
        self._rows += 1
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            message = f"line is not valid UTF-8: byte 0x{bad:02x} at byte offset {exc.start} ({exc.reason})"
            self._error(line_no, "not_utf8", message, None)
            return
        if line_no == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a UTF-8 byte-order mark some editors write; json.loads rejects it
        try:
            example = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            self._error(line_no, "invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}", None)
            return
        except (RecursionError, ValueError) as exc:  # absurd nesting, integers over 4300 digits
            self._error(line_no, "invalid_json", f"invalid JSON: {exc or type(exc).__name__}", None)
            return
        if not isinstance(example, dict):
            message = f"each line must be a JSON object, this one is {_json_type(example)}"
            self._error(line_no, "invalid_type", message, None)
            return
        self._example(line_no, example)

    def _example(self, line_no: int, example: dict[str, object]) -> None:
        errs: list[_Error] = []
        fmt: DatasetFormat
        if "messages" in example:
            fmt = "chat"
        elif "prompt" in example and "completion" in example:
            fmt = "prompt_completion"
        elif "input" in example and "preferred_output" in example and "non_preferred_output" in example:
            fmt = "preference"
        else:
            keys = ", ".join(json.dumps(key) for key in list(example)[:8]) or "none"
            message = f"unknown example shape: {_DETECT_HINT}; keys: {keys}"
            self._error(line_no, "missing_messages", message, None)
            return
        if self._format is None:
            self._format, self._format_line = fmt, line_no
        elif fmt != self._format:
            message = f"this row is {fmt} but the dataset is {self._format} (from line {self._format_line})"
            errs.append(("mixed_formats", message, None))
        count = self._count
        has_system: bool | None = None
        if fmt == "chat":
            messages = example["messages"]
            tokens, trained, roles, has_system = _check_messages(messages, "messages", count, errs, True)
            tokens += 2
            turns = len(messages) if isinstance(messages, list) else 0
        elif fmt == "prompt_completion":
            tokens, trained = _check_prompt_completion(example["prompt"], example["completion"], count, errs)
            roles, turns = [], 2
        else:
            tokens, trained, roles, turns = self._preference(example, errs)
        if errs:
            for code, message, field in errs:
                self._error(line_no, code, message, field)
            return
        self._stats.add(line_no, example, tokens, trained, turns, roles, has_system)

    def _preference(self, example: dict[str, object], errs: list[_Error]) -> tuple[int, int, list[str], int]:
        count = self._count
        given = example["input"]
        messages = given.get("messages") if isinstance(given, dict) else None
        if isinstance(given, dict):
            tokens, _, roles, _ = _check_messages(messages, "input.messages", count, errs, False)
        else:
            message = f'"input" must be an object with "messages", not {_json_type(given)}'
            errs.append(("invalid_type", message, "input"))
            tokens, roles = 0, []
        preferred, non_preferred = example["preferred_output"], example["non_preferred_output"]
        preferred_tokens, trained = _check_outputs(preferred, "preferred_output", count, errs)
        _check_outputs(non_preferred, "non_preferred_output", count, errs)
        if errs:
            return 0, 0, [], 0
        assert isinstance(messages, list) and isinstance(preferred, list) and isinstance(non_preferred, list)
        outputs = len(preferred) + len(non_preferred)
        roles += ["assistant"] * outputs
        return tokens + 2 + preferred_tokens, trained, roles, len(messages) + outputs


def format_mismatch(
    *, param: str, file_id: str, file_format: DatasetFormat | None, method_type: str
) -> str | None:
    """Return why the file `file_id` (given as `param`) cannot train a `method_type` job, or None.

    None too while the file's format is not known yet (still validating): it is checked again then.
    """
    wanted = FORMATS_OF_METHOD.get(method_type, ())
    if file_format is None or file_format in wanted:
        return None
    fits = next((method for method, formats in FORMATS_OF_METHOD.items() if file_format in formats), None)
    hint = f'; use method type "{fits}" for {file_format} data' if fits else ""
    return (
        f"{param} {file_id!r} is a {file_format} file, and a {method_type} job trains on "
        f"{' or '.join(wanted)} files{hint}"
    )


def validate_chunks(
    chunks: Iterable[bytes],
    limits: ValidationLimits = ValidationLimits(),
    count_tokens: TokenCounter | None = None,
    tokenizer_name: str | None = None,
) -> ValidationReport:
    """Feed every chunk to a new `DatasetValidator` and return its report."""
    validator = DatasetValidator(limits, count_tokens, tokenizer_name)
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()
