"""Small JSONL datasets for the tests."""

from __future__ import annotations

import json


def chat_rows(count: int = 10, *, seed: int = 0) -> list[dict[str, object]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"What is {index} + {seed}?"},
                {"role": "assistant", "content": str(index + seed)},
            ]
        }
        for index in range(count)
    ]


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def broken_on_line_7() -> bytes:
    lines = jsonl(chat_rows(10, seed=7)).splitlines(keepends=True)
    lines[6] = b'{"messages": [{"role": "user", "content": "oops"}\n'
    return b"".join(lines)
