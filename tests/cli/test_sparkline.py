"""The loss sparkline of `jobs watch`, and the size and time formats."""

from __future__ import annotations

import math

import pytest

from studio.cli.output import duration, human_bytes, parse_size
from studio.cli.sparkline import BLOCKS, sparkline


def test_a_falling_loss_draws_from_the_top_block_to_the_bottom_one() -> None:
    line = sparkline([4.0, 3.0, 2.0, 1.0, 0.5])
    assert len(line) == 5 and line[0] == "█" and line[-1] == "▁"
    assert [BLOCKS.index(c) for c in line] == sorted((BLOCKS.index(c) for c in line), reverse=True)


def test_edge_cases() -> None:
    assert sparkline([]) == "" and sparkline([math.nan, math.inf]) == ""
    assert sparkline([2.0]) == "▄" and sparkline([1.0, 1.0, 1.0]) == "▄▄▄"
    assert sparkline([1.0, math.nan, 2.0]) == "▁█"  # not-finite values are left out
    assert sparkline([1, 2], width=0) == ""


def test_a_long_series_is_averaged_into_the_width() -> None:
    values = [float(i % 10) for i in range(1000)] + [100.0] * 100  # 55 values a bucket
    line = sparkline(values, width=20)
    assert len(line) == 20 and line[-1] == "█" and line[-2] == "▇" and set(line[:-2]) == {"▁"}
    assert len(sparkline(list(range(7)), width=40)) == 7


def test_sizes_and_durations() -> None:
    assert parse_size("64MiB") == parse_size("64M") == parse_size("64 mb") == 64 * 1024**2
    assert parse_size("1.5k") == 1536 and parse_size("4096") == 4096
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(None) == "-"
    assert duration(5) == "5s" and duration(185) == "3m05s" and duration(3720) == "1h02m"
    assert duration(None) == "-"
