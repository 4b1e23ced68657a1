"""Streaming validation of JSONL fine-tuning datasets: errors, warnings, statistics, chunking."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from studio.domain.dataset_stats import distribution
from studio.domain.datasets import (
    DatasetValidator,
    ValidationLimits,
    ValidationReport,
    estimate_tokens,
    validate_chunks,
)


def jsonl(*rows: Any) -> bytes:
    """Return one line per row: dicts and lists as JSON, str and bytes as they are."""
    lines = []
    for row in rows:
        if isinstance(row, bytes):
            lines.append(row)
        elif isinstance(row, str):
            lines.append(row.encode())
        else:
            lines.append(json.dumps(row).encode())
    return b"\n".join(lines) + b"\n"


def validate(data: bytes, **limits: int) -> ValidationReport:
    return validate_chunks([data], ValidationLimits(**limits))


def chat(*pairs: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in pairs], **extra}


def good_chat(i: int) -> dict[str, Any]:
    return chat(("system", "Be brief."), ("user", f"question {i}"), ("assistant", f"answer {i}"))


def codes(report: ValidationReport) -> list[tuple[int | None, str, str | None]]:
    return [(issue.line, issue.code, issue.field) for issue in report.errors]


# --- good files and their statistics -----------------------------------------------------------


def test_good_chat_file_statistics_follow_the_documented_formula() -> None:
    first = chat(("system", "You are kind."), ("user", "Hi"), ("assistant", "Hello there"))
    second = {
        "messages": [
            {"role": "user", "content": "abcd"},
            {"role": "assistant", "content": "abcdefgh", "weight": 0},
            {"role": "user", "content": "xy"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "abcde"}, {"type": "text", "text": "fghi"}],
            },
        ],
        "metadata": {"source": "unit test"},
    }
    report = validate(jsonl(first, second))

    assert report.valid and report.format == "chat"
    assert report.error_count == 0 and report.errors == []
    stats = report.stats
    assert (stats.rows, stats.valid_rows) == (2, 2)
    # ceil(chars/4) per message + 4 per message + 2 per example:
    # first: (4+4) + (1+4) + (3+4) + 2 = 22; second: (1+4) + (2+4) + (1+4) + (3+4) + 2 = 25
    assert stats.tokens_total == 47
    assert stats.tokens_per_example.model_dump() == {"min": 22, "mean": 23.5, "p50": 22, "p95": 25, "max": 25}
    # Trained: "Hello there" (3) and "abcdefghi" (3); the weight-0 assistant message is left out.
    assert stats.trained_tokens_total == 6
    assert stats.turns_per_example.model_dump() == {"min": 3, "mean": 3.5, "p50": 3, "p95": 4, "max": 4}
    assert stats.role_counts == {"system": 1, "user": 3, "assistant": 3}
    assert stats.examples_without_system == 1
    assert stats.duplicate_rows == 0 and stats.examples_over_context == 0
    assert stats.token_counting == "estimate:chars/4"
    assert stats.estimated_trained_tokens == {"1": 47, "2": 94, "3": 141, "4": 188}
    assert [(w.line, w.code) for w in report.warnings] == [(2, "no_system_message")]
    assert report.warnings[0].message == "1 of 2 examples have no system message"


def test_tool_calls_and_tool_messages_are_valid_chat() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"q":1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ],
        "tools": [{"type": "function", "function": {"name": "get"}}],
        "parallel_tool_calls": False,
    }
    report = validate(jsonl(row))
    assert report.valid, report.errors
    # The tool call's name and arguments ("get" + '{"q":1}', 10 chars) are the tokens of that message.
    assert report.stats.tokens_total == (5 + 4) + (3 + 4) + (2 + 4) + (3 + 4) + 2
    assert report.stats.trained_tokens_total == 3 + 3
    assert report.stats.role_counts == {"user": 1, "assistant": 2, "tool": 1}


def test_prompt_completion_file() -> None:
    report = validate(jsonl({"prompt": "abcd", "completion": "abcdefgh"}, {"prompt": "", "completion": "x"}))
    assert report.valid and report.format == "prompt_completion"
    stats = report.stats
    assert stats.tokens_total == (1 + 2) + (0 + 1)
    assert stats.trained_tokens_total == 2 + 1
    assert stats.turns_per_example.min == stats.turns_per_example.max == 2
    assert stats.role_counts == {}
    assert stats.examples_without_system == 0 and report.warnings == []


def test_preference_file() -> None:
    row = {
        "input": {"messages": [{"role": "user", "content": "abcd"}], "tools": []},
        "preferred_output": [{"role": "assistant", "content": "abcdefgh"}],
        "non_preferred_output": [{"role": "assistant", "content": "abcdefghijkl"}],
    }
    report = validate(jsonl(row))
    assert report.valid and report.format == "preference"
    stats = report.stats
    # Input as chat, (1+4) + 2, plus the preferred output (2+4); the non-preferred one is not counted.
    assert stats.tokens_total == 13
    assert stats.trained_tokens_total == 2
    assert stats.turns_per_example.max == 3
    assert stats.role_counts == {"user": 1, "assistant": 2}
    assert stats.examples_without_system == 0 and report.warnings == []


# --- one error per code, on line 7 of a 10-line file ----------------------------------------------

ERROR_ROWS: list[tuple[Any, str, str | None]] = [
    ('{"messages": [{"role": "user" "content": "x"}]}', "invalid_json", None),
    ('{"messages": [{"role": "assistant", "content": "x"}], "score": NaN}', "invalid_json", None),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", None),
    ("[1, 2]", "invalid_type", None),
    ({"messages": "hello"}, "invalid_type", "messages"),
    (
        {"messages": [{"role": "user", "content": "x"}, "oops", {"role": "assistant", "content": "y"}]},
        "invalid_type",
        "messages[1]",
    ),
    ({"text": "hello"}, "missing_messages", None),
    ({"messages": []}, "missing_messages", "messages"),
    ({"messages": None}, "missing_messages", "messages"),
    (chat(("user", "x"), ("bot", "y"), ("assistant", "z")), "unrecognized_role", "messages[1].role"),
    (
        {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},
        "unrecognized_role",
        "messages[0].role",
    ),
    (chat(("user", "x"), ("assistant", "")), "missing_content", "messages[1].content"),
    (
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
        "missing_content",
        "messages[0].content",
    ),
    (chat(("user", "x"), ("assistant", [])), "missing_content", "messages[1].content"),
    (
        chat(("user", [{"type": "image_url", "image_url": "u"}]), ("assistant", "y")),
        "missing_content",
        "messages[0].content",
    ),
    (chat(("user", "x"), ("assistant", 42)), "missing_content", "messages[1].content"),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": []},
            ]
        },
        "missing_content",
        "messages[1].content",
    ),
    (
        chat(("user", "x"), ("tool", "result"), ("assistant", "y")),
        "missing_tool_call_id",
        "messages[1].tool_call_id",
    ),
    (
        {"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
        "invalid_weight",
        "messages[0].weight",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
        "invalid_weight",
        "messages[1].weight",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "y", "weight": True},
            ]
        },
        "invalid_weight",
        "messages[1].weight",
    ),
    (chat(("system", "s"), ("user", "x")), "no_assistant_message", "messages"),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
        "no_trainable_message",
        "messages",
    ),
    ({"prompt": "p", "completion": "c"}, "mixed_formats", None),
    (b'{"messages": "\xff"}', "not_utf8", None),
]


@pytest.mark.parametrize(("row", "code", "field"), ERROR_ROWS)
def test_each_error_code_is_reported_on_its_line_with_its_field(
    row: Any, code: str, field: str | None
) -> None:
    rows = [good_chat(i) for i in range(10)]
    rows[6] = row
    report = validate(jsonl(*rows))

    assert codes(report) == [(7, code, field)]
    assert report.error_count == 1 and not report.valid
    assert report.errors[0].message
    assert (report.stats.rows, report.stats.valid_rows) == (10, 9)
    assert report.format == "chat"


def test_error_messages_name_the_problem() -> None:
    rows = [
        '{"messages": [{"role": "user" "content": "x"}]}',
        chat(("user", "x"), ("bot", "y"), ("assistant", "z")),
        {"text": "hello"},
        {"prompt": "p", "completion": "c"},
    ]
    messages = [issue.message for issue in validate(jsonl(*rows)).errors]
    assert messages[0] == "invalid JSON: Expecting ',' delimiter at column 31"
    assert '"bot"' in messages[1] and "system, user, assistant, tool" in messages[1]
    assert (
        '"messages", or "prompt"+"completion", or "input"+"preferred_output"+"non_preferred_output"'
        in messages[2]
    )
    # Line 1 was not JSON, so the format comes from line 2.
    assert "prompt_completion" in messages[3] and "chat" in messages[3] and "line 2" in messages[3]


def test_not_utf8_gives_the_byte_offset_in_the_line() -> None:
    report = validate(jsonl(good_chat(0), b'{"messages": "\xff"}'))
    assert codes(report) == [(2, "not_utf8", None)]
    assert "byte offset 14" in report.errors[0].message and "0xff" in report.errors[0].message


def test_a_row_with_several_problems_reports_each() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "", "weight": 1},
            {"role": "critic", "content": "y"},
            {"role": "tool", "content": "r"},
        ]
    }
    report = validate(jsonl(row))
    assert codes(report) == [
        (1, "missing_content", "messages[0].content"),
        (1, "invalid_weight", "messages[0].weight"),
        (1, "unrecognized_role", "messages[1].role"),
        (1, "missing_tool_call_id", "messages[2].tool_call_id"),
        (1, "no_assistant_message", "messages"),
    ]
    assert report.error_count == 5 and report.stats.valid_rows == 0


def test_prompt_completion_errors() -> None:
    report = validate(jsonl({"prompt": "p", "completion": ""}, {"prompt": 5, "completion": "c"}))
    assert codes(report) == [(1, "missing_content", "completion"), (2, "missing_content", "prompt")]


def test_preference_errors_name_their_fields() -> None:
    good = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    }
    rows = [
        {**good, "input": {"messages": [{"role": "human", "content": "q"}]}},
        {**good, "preferred_output": [{"role": "assistant", "content": ""}]},
        {**good, "non_preferred_output": [{"role": "user", "content": "b"}]},
        {**good, "preferred_output": []},
        {**good, "input": "q"},
        {**good, "input": {}},
        good,
    ]
    report = validate(jsonl(*rows))
    assert codes(report) == [
        (1, "unrecognized_role", "input.messages[0].role"),
        (2, "missing_content", "preferred_output[0].content"),
        (3, "unrecognized_role", "non_preferred_output[0].role"),
        (4, "missing_content", "preferred_output"),
        (5, "invalid_type", "input"),
        (6, "missing_messages", "input.messages"),
    ]
    assert report.format == "preference" and report.stats.valid_rows == 1


def test_mixed_formats_name_both_formats() -> None:
    report = validate(jsonl({"prompt": "p", "completion": "c"}, good_chat(1), good_chat(2)))
    assert report.format == "prompt_completion"
    assert codes(report) == [(2, "mixed_formats", None), (3, "mixed_formats", None)]
    assert "chat" in report.errors[0].message and "prompt_completion" in report.errors[0].message


# --- file-level shape: empty, blank lines, line endings ---------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n", b"  \n\t\n\r\n", b"   "])
def test_empty_file_is_an_error(data: bytes) -> None:
    report = validate(data)
    assert codes(report) == [(None, "empty_file", None)]
    assert not report.valid and report.format is None
    assert report.stats.rows == 0 and report.stats.tokens_per_example.max == 0


def test_blank_lines_are_skipped_but_counted_in_line_numbers() -> None:
    data = b"\n" + jsonl(good_chat(0)) + b"   \n\n" + b"{not json}\n" + jsonl(good_chat(1))
    report = validate(data)
    assert codes(report) == [(5, "invalid_json", None)]
    assert (report.stats.rows, report.stats.valid_rows) == (3, 2)


def test_crlf_line_endings_give_the_same_report() -> None:
    data = jsonl(good_chat(0), "[1]", good_chat(1))
    crlf = data.replace(b"\n", b"\r\n")
    assert validate(crlf) == validate(data)
    assert codes(validate(crlf)) == [(2, "invalid_type", None)]


def test_a_file_without_trailing_newline_validates_its_last_line() -> None:
    data = jsonl(good_chat(0), good_chat(1)).rstrip(b"\n")
    report = validate(data)
    assert report.valid and report.stats.valid_rows == 2
    assert validate(data + b"\n{").errors[0].line == 3


def test_a_leading_byte_order_mark_is_accepted() -> None:
    report = validate(b"\xef\xbb\xbf" + jsonl(good_chat(0)))
    assert report.valid


# --- chunking and limits ------------------------------------------------------------------------


def sample_file() -> bytes:
    rows: list[Any] = [good_chat(i) for i in range(30)]
    rows[3] = "{bad json"
    rows[8] = b'{"messages": "caf\xc3"}'
    rows[12] = chat(("user", "caf\u00e9 \u2603 \U0001f600"), ("assistant", "na\u00efve"))
    rows[15] = ""
    rows[20] = {"prompt": "p", "completion": "c"}
    rows[25] = good_chat(1)
    data = jsonl(*rows).replace(b"\n", b"\r\n", 5)
    return data.rstrip(b"\r\n")


def feed_in(data: bytes, sizes: list[int], limits: ValidationLimits = ValidationLimits()) -> ValidationReport:
    validator, start = DatasetValidator(limits), 0
    for size in sizes:
        validator.feed(data[start : start + size])
        start += size
    validator.feed(data[start:])
    return validator.finish()


def test_chunk_boundaries_do_not_change_the_report() -> None:
    data = sample_file()
    whole = validate(data)
    assert [code for _, code, _ in codes(whole)] == ["invalid_json", "not_utf8", "mixed_formats"]
    assert whole.stats.duplicate_rows == 1

    assert feed_in(data, [1] * len(data)) == whole
    rng = random.Random(7)
    for _ in range(20):
        sizes = [rng.randint(0, 300) for _ in range(60)]
        assert feed_in(data, sizes) == whole


def test_an_overlong_line_is_dropped_as_it_arrives_and_the_next_line_is_still_validated() -> None:
    long_row = json.dumps(chat(("user", "x" * 1000), ("assistant", "y"))).encode()
    data = jsonl(
        chat(("user", "a"), ("assistant", "b")), long_row, "{bad", chat(("user", "c"), ("assistant", "d"))
    )
    limits = ValidationLimits(max_line_bytes=100)
    validator, start = DatasetValidator(limits), 0
    while start < len(data):
        validator.feed(data[start : start + 7])
        start += 7
        assert len(validator._pending) <= 100  # never more than one line's limit is buffered
    report = validator.finish()

    assert codes(report) == [(2, "line_too_long", None), (3, "invalid_json", None)]
    assert "100 bytes" in report.errors[0].message
    assert (report.stats.rows, report.stats.valid_rows) == (4, 2)
    # The same file in one chunk, or with the long line last and unterminated, reads the same.
    assert validate_chunks([data], limits) == report
    tail = validate_chunks([data + long_row], limits)
    assert codes(tail)[-1] == (5, "line_too_long", None)


def test_a_huge_line_without_newline_keeps_memory_bounded() -> None:
    validator = DatasetValidator(ValidationLimits(max_line_bytes=1000))
    piece = b"x" * 65536
    for _ in range(64):  # 4 MiB, no newline
        validator.feed(piece)
        assert len(validator._pending) == 0
    report = validator.finish()
    assert codes(report) == [(1, "line_too_long", None)]
    assert str(64 * 65536) in report.errors[0].message


def test_max_errors_keeps_the_first_errors_and_counts_them_all() -> None:
    report = validate(jsonl(*(["{"] * 10), good_chat(0)), max_errors=3)
    assert codes(report) == [(1, "invalid_json", None), (2, "invalid_json", None), (3, "invalid_json", None)]
    assert report.error_count == 10 and not report.valid


# --- warnings -----------------------------------------------------------------------------------


def test_duplicates_are_counted_on_canonical_content() -> None:
    row = good_chat(0)
    reordered = {"messages": [dict(reversed(list(m.items()))) for m in row["messages"]]}
    report = validate(jsonl(row, good_chat(1), reordered, row))
    assert report.valid
    assert report.stats.duplicate_rows == 2
    assert [(w.line, w.code) for w in report.warnings] == [(3, "duplicate_examples")]
    assert "2" in report.warnings[0].message


def test_over_context_length_warning() -> None:
    short = chat(("system", "s"), ("user", "x"), ("assistant", "y"))  # 3 * (1 + 4) + 2 = 17 tokens
    long = chat(("system", "s"), ("user", "x" * 40), ("assistant", "y"))  # 5 + (10 + 4) + 5 + 2 = 26 tokens
    report = validate(jsonl(short, long, long), context_length=20)
    assert report.valid
    assert report.stats.examples_over_context == 2
    assert [(w.line, w.code) for w in report.warnings] == [
        (2, "over_context_length"),
        (3, "duplicate_examples"),
    ]
    assert "2 of 3" in report.warnings[0].message and "20 tokens" in report.warnings[0].message


# --- token counting -----------------------------------------------------------------------------


def test_estimate_tokens_is_ceil_chars_over_four() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_a_custom_token_counter_and_its_name_are_used() -> None:
    def count_words(text: str) -> int:
        return len(text.split())

    data = jsonl(chat(("user", "one two three"), ("assistant", "four five")))
    named = validate_chunks([data], count_tokens=count_words, tokenizer_name="words")
    assert named.stats.token_counting == "words"
    assert named.stats.tokens_total == (3 + 4) + (2 + 4) + 2
    assert named.stats.trained_tokens_total == 2
    assert validate_chunks([data], count_tokens=count_words).stats.token_counting == "custom"
    # A name without a counter does not change how tokens are counted, so it is not reported.
    assert validate_chunks([data], tokenizer_name="words").stats.token_counting == "estimate:chars/4"


def test_distribution_uses_nearest_rank_percentiles() -> None:
    summary = distribution(list(range(20, 0, -1)))
    assert summary.model_dump() == {"min": 1, "mean": 10.5, "p50": 10, "p95": 19, "max": 20}
    assert distribution([5]).model_dump() == {"min": 5, "mean": 5, "p50": 5, "p95": 5, "max": 5}
    assert distribution([]).max == 0


def test_feed_after_finish_is_refused_and_finish_is_idempotent() -> None:
    validator = DatasetValidator()
    validator.feed(jsonl(good_chat(0)))
    report = validator.finish()
    assert validator.finish() is report
    with pytest.raises(RuntimeError):
        validator.feed(b"{}")


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ValidationLimits(max_line_bytes=0)


# --- throughput (printed, not asserted: timings depend on the machine) -----------------------------


def test_throughput_on_a_20_mb_chat_file(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(3)
    words = ["the", "model", "answers", "questions", "about", "data", "tokens", "and", "examples"]
    lines, size = [], 0
    while size < 20_000_000:
        row = chat(
            ("system", "You are a helpful assistant."),
            ("user", " ".join(rng.choices(words, k=rng.randint(10, 80)))),
            ("assistant", " ".join(rng.choices(words, k=rng.randint(20, 300)))),
        )
        line = json.dumps(row).encode() + b"\n"
        lines.append(line)
        size += len(line)
    data = b"".join(lines)
    chunk = 1 << 20
    started = time.perf_counter()
    report = validate_chunks(data[i : i + chunk] for i in range(0, len(data), chunk))
    elapsed = time.perf_counter() - started
    assert report.valid and report.stats.valid_rows == len(lines)
    with capsys.disabled():
        rate = len(data) / elapsed / 1e6
        print(f"\ndataset validation: {rate:.1f} MB/s ({len(lines)} rows, {len(data)} bytes, one core)")


def test_token_histogram_counts_every_example_in_equal_ranges() -> None:
    from studio.domain.dataset_stats import histogram

    assert histogram([]) == []
    (only,) = histogram([7, 7, 7])
    assert (only.low, only.high, only.count) == (7, 7, 3)
    bins = histogram([1, 2, 3, 10, 24], bins=3)
    assert [(b.low, b.high, b.count) for b in bins] == [(1, 8, 3), (9, 16, 1), (17, 24, 1)]
    assert (
        sum(b.count for b in histogram(list(range(1000)))) == 1000 and len(histogram(list(range(1000)))) == 12
    )
