"""Kubernetes label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`), as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable

Labels = dict[str, str]
_SET = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$")


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _requirement(part: str) -> Callable[[Labels], bool]:
    if match := _SET.match(part):
        key, op, values = match[1], match[2], {v.strip() for v in match[3].split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in part:
        key, value = (s.strip() for s in part.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "=" in part:
        key, value = (s.strip() for s in part.replace("==", "=").split("=", 1))
        if not key:
            raise ValueError(f"no key in {part!r}")
        return lambda labels: labels.get(key) == value
    if part.startswith("!"):
        key = part[1:].strip()
        return lambda labels: key not in labels
    if not part or any(ch in part for ch in " ()"):
        raise ValueError(f"cannot parse {part!r}")
    return lambda labels: part in labels


def parse(selector: str) -> Callable[[Labels], bool]:
    """Return a predicate over labels; raise ValueError on a selector the API server would refuse."""
    requirements = [_requirement(part) for part in _split(selector)]
    return lambda labels: all(req(labels) for req in requirements)
