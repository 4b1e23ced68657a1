"""Statistics of a fine-tuning dataset's valid examples, gathered one example at a time.

Per-example values are kept in `array("I")` (4 bytes each) rather than lists of ints (~36 bytes each),
so a million-example file costs a few MB; duplicates are found through a set of 64-bit digests of each
example's canonical JSON, never through the examples themselves.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Sequence

from pydantic import BaseModel, Field

# A per-example count larger than this cannot happen within the line-size limit, but clamping keeps
# `array("I")` from raising OverflowError on a pathological custom token counter.
_MAX_U32 = 2**32 - 1
# Bins of the tokens-per-example histogram a dataset's statistics carry.
HISTOGRAM_BINS = 12

# One encoder built once: `json.dumps(obj, sort_keys=True, separators=(",", ":"))` would build a new
# one for every row, and this produces exactly the same text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class Distribution(BaseModel):
    """Summary of a list of numbers; every field is 0 when the list is empty."""

    min: float
    mean: float
    p50: float
    p95: float
    max: float


class HistogramBin(BaseModel):
    """How many values fall in `low..high` (both included)."""

    low: int
    high: int
    count: int


class DatasetStats(BaseModel):
    """Statistics of a dataset; every count except `rows` covers only the valid examples."""

    rows: int
    valid_rows: int
    tokens_total: int
    tokens_per_example: Distribution
    # Empty on datasets validated before it existed.
    token_histogram: list[HistogramBin] = Field(default_factory=list)
    trained_tokens_total: int
    turns_per_example: Distribution
    role_counts: dict[str, int]
    duplicate_rows: int
    examples_over_context: int
    examples_without_system: int
    token_counting: str
    estimated_trained_tokens: dict[str, int]


def distribution(values: Sequence[int]) -> Distribution:
    """Return the min, mean, nearest-rank p50 and p95, and max of `values` (all 0 when empty)."""
    if not values:
        return Distribution(min=0, mean=0, p50=0, p95=0, max=0)
    ordered = sorted(values)
    count = len(ordered)
    return Distribution(
        min=ordered[0],
        mean=sum(ordered) / count,
        p50=_nearest_rank(ordered, 50),
        p95=_nearest_rank(ordered, 95),
        max=ordered[-1],
    )


def histogram(values: Sequence[int], *, bins: int = HISTOGRAM_BINS) -> list[HistogramBin]:
    """Return `values` counted in at most `bins` equal-width integer ranges from their min to their max
    (no bins when empty, one when all are equal)."""
    if not values:
        return []
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))  # ceil: the last range reaches the max
    counts = [0] * (-(-(high - low + 1) // width))
    for value in values:
        counts[(value - low) // width] += 1
    return [
        HistogramBin(low=low + i * width, high=min(high, low + (i + 1) * width - 1), count=n)
        for i, n in enumerate(counts)
    ]


def _nearest_rank(ordered: list[int], percent: int) -> int:
    # Nearest-rank: the smallest value with at least `percent`% of the values at or below it, i.e.
    # the ceil(percent/100 * n)-th value; integer arithmetic keeps the ceiling exact.
    rank = -(-percent * len(ordered) // 100)
    return ordered[max(rank, 1) - 1]


def canonical_digest(example: object) -> int | None:
    """Return a 64-bit digest of the example's canonical JSON, or None if it cannot be re-encoded."""
    try:
        text = _CANONICAL.encode(example)
    except (RecursionError, ValueError):
        # Nesting that json.loads just managed can overflow the encoder's stack; such a row is simply
        # left out of duplicate detection rather than failing the whole validation.
        return None
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class StatsAccumulator:
    """Running statistics over the valid examples, fed one example at a time by the validator."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self.valid_rows = 0
        self.tokens_total = 0
        self.trained_tokens_total = 0
        self.tokens = array("I")
        self.turns = array("I")
        self.role_counts: dict[str, int] = {}
        self.seen: set[int] = set()
        self.duplicate_rows = 0
        self.first_duplicate_line: int | None = None
        self.over_context = 0
        self.first_over_context_line: int | None = None
        self.chat_examples = 0
        self.without_system = 0
        self.first_without_system_line: int | None = None

    def add(
        self,
        line: int,
        example: object,
        tokens: int,
        trained: int,
        turns: int,
        roles: list[str],
        chat_has_system: bool | None,
    ) -> None:
        """Count one valid example; `chat_has_system` is None for examples that are not chat."""
        self.valid_rows += 1
        self.tokens_total += tokens
        self.trained_tokens_total += trained
        self.tokens.append(min(tokens, _MAX_U32))
        self.turns.append(min(turns, _MAX_U32))
        counts = self.role_counts
        for role in roles:
            counts[role] = counts.get(role, 0) + 1
        if tokens > self.context_length:
            self.over_context += 1
            if self.first_over_context_line is None:
                self.first_over_context_line = line
        if chat_has_system is not None:
            self.chat_examples += 1
            if not chat_has_system:
                self.without_system += 1
                if self.first_without_system_line is None:
                    self.first_without_system_line = line
        digest = canonical_digest(example)
        if digest is not None:
            if digest in self.seen:
                self.duplicate_rows += 1
                if self.first_duplicate_line is None:
                    self.first_duplicate_line = line
            else:
                self.seen.add(digest)

    def stats(self, rows: int, token_counting: str) -> DatasetStats:
        """Return the statistics gathered so far, for a file of `rows` non-blank lines."""
        total = self.tokens_total
        return DatasetStats(
            rows=rows,
            valid_rows=self.valid_rows,
            tokens_total=total,
            tokens_per_example=distribution(self.tokens),
            token_histogram=histogram(self.tokens),
            trained_tokens_total=self.trained_tokens_total,
            turns_per_example=distribution(self.turns),
            role_counts=dict(self.role_counts),
            duplicate_rows=self.duplicate_rows,
            examples_over_context=self.over_context,
            examples_without_system=self.without_system,
            token_counting=token_counting,
            # OpenAI bills every token of every epoch, so n epochs cost n times the dataset's tokens.
            estimated_trained_tokens={str(epochs): epochs * total for epochs in range(1, 5)},
        )

    def warnings(self) -> list[tuple[int | None, str, str]]:
        """Return (first line seen, code, message) of each kind of warning that occurred."""
        found: list[tuple[int | None, str, str]] = []
        if self.without_system:
            message = f"{self.without_system} of {self.chat_examples} examples have no system message"
            found.append((self.first_without_system_line, "no_system_message", message))
        if self.over_context:
            message = (
                f"{self.over_context} of {self.valid_rows} examples are longer than the context length of "
                f"{self.context_length} tokens; they will be truncated in training"
            )
            found.append((self.first_over_context_line, "over_context_length", message))
        if self.duplicate_rows:
            message = f"{self.duplicate_rows} examples duplicate an earlier example"
            found.append((self.first_duplicate_line, "duplicate_examples", message))
        return found
