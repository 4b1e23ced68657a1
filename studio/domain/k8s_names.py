"""Kubernetes naming and quantity rules, checked before any API call (pure: no SDK, no I/O).

Object names are DNS-1035 labels (what a Service name must be, and stricter than DNS-1123): lowercase
`[a-z0-9-]`, starting with a letter, ending alphanumeric, at most 63 characters (names made here: 47).
Names made from a model id carry a short hash of the exact input, so two different models (or clients)
never share a name even when their readable parts sanitise to the same text.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal, InvalidOperation

from studio.errors import InvalidInput

MAX_NAME = 63
# Object names made here stay at most 47 characters: a Deployment's pods are named `<name>-<10>-<5>` and
# Kubernetes cuts the `<name>-<10>-` part to 58 characters, so 47 keeps every pod name starting with
# `<name>-` (which the autoscaling query matches on).
MAX_MADE_NAME = 47
MAX_LABEL_VALUE = 63
HASH_LEN = 8

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Kubernetes' quantity grammar: a non-negative decimal number, then one binary (Ki..Ei), decimal (m, k,
# M..E) or exponent (e3, E-2) suffix.
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][-+]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9)}
_DECIMAL |= {"T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}
MAX_GPUS = 64


def short_hash(*parts: str) -> str:
    """Return the first `HASH_LEN` hex digits of the SHA-256 of `parts` (NUL-joined)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_LEN]


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower())
    return slug.strip("-")


def object_name(model: str, *, client_id: str, prefix: str = "ms") -> str:
    """Return the DNS-1035 name shared by a deployment's Deployment, Service, PVC and ScaledObject.

    `<prefix>-<readable part of the model>-<hash of client and model>`, at most `MAX_MADE_NAME` characters.

    Raises:
        InvalidInput: `model` is empty, or `prefix` is not a valid name start.
    """
    if not model.strip():
        raise InvalidInput("the model must not be empty", param="model")
    if not _DNS_1035.match(prefix) or len(prefix) > 16:
        raise InvalidInput(f"invalid name prefix {prefix!r}", param="prefix")
    digest = short_hash(client_id, model)
    # Keep the end of the model id (`org/llama-3-8b` -> `llama-3-8b`): it is the part people recognise.
    readable = _slug(model.rsplit("/", 1)[-1]) or _slug(model)
    room = MAX_MADE_NAME - len(prefix) - len(digest) - 2
    readable = readable[:room].strip("-")
    name = f"{prefix}-{readable}-{digest}" if readable else f"{prefix}-{digest}"
    validate_object_name(name)
    return name


def namespace_name(base: str, client_id: str) -> str:
    """Return the per-client namespace `<base>-<client>`, hashed when it would pass 63 characters.

    Raises:
        InvalidInput: `base` is not a valid namespace name.
    """
    validate_object_name(base, field="namespace")
    slug = _slug(client_id)
    name = f"{base}-{slug}"
    if len(name) > MAX_NAME or not slug:
        digest = short_hash(client_id)
        room = MAX_NAME - len(base) - len(digest) - 2
        name = f"{base}-{slug[:room].strip('-')}-{digest}" if slug[:room].strip("-") else f"{base}-{digest}"
    validate_object_name(name, field="namespace")
    return name


def validate_object_name(name: str, *, field: str = "name") -> str:
    """Return `name` when it is a DNS-1035 label (what Service names must be).

    Raises:
        InvalidInput: naming `field`, with the rule broken.
    """
    if len(name) > MAX_NAME:
        raise InvalidInput(f"{field} {name!r} is longer than {MAX_NAME} characters", param=field)
    if not _DNS_1035.match(name):
        raise InvalidInput(
            f"{field} {name!r} must be lowercase letters, digits and '-', start with a letter "
            "and end with a letter or digit",
            param=field,
        )
    return name


def label_value(value: str) -> str:
    """Return `value` as a valid label value (<= 63 characters of `[A-Za-z0-9-_.]`, alphanumeric ends).

    A value that is already valid is returned unchanged; any other is sanitised and gets a hash of the
    original, so two different inputs never map to the same label value.
    """
    if len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.match(value):
        return value
    digest = short_hash(value)
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)
    cleaned = cleaned[: MAX_LABEL_VALUE - len(digest) - 1]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    return f"{cleaned}-{digest}" if cleaned else digest


def parse_quantity(value: str, *, field: str) -> Decimal:
    """Return the amount a Kubernetes quantity (`"500m"`, `"2"`, `"16Gi"`, `"1e3"`) stands for.

    Raises:
        InvalidInput: naming `field`, when `value` is not a non-negative quantity.
    """
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if match is None or value != value.strip():
        raise InvalidInput(
            f"{field} {value!r} is not a Kubernetes quantity (like '500m', '2', '16Gi')", param=field
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise InvalidInput(f"{field} {value!r} is not a number", param=field) from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix:
        return number * Decimal(10) ** int(suffix[1:])
    return number


def validate_cpu(value: str, *, field: str) -> str:
    """Return `value` when it is a positive CPU quantity (`"500m"`, `"2"`).

    Raises:
        InvalidInput: naming `field`.
    """
    amount = parse_quantity(value, field=field)
    if amount <= 0:
        raise InvalidInput(f"{field} must be more than 0, got {value!r}", param=field)
    if amount < Decimal("0.001"):
        raise InvalidInput(f"{field} {value!r} is below 1m, the smallest CPU amount", param=field)
    return value


def validate_memory(value: str, *, field: str) -> str:
    """Return `value` when it is a positive byte quantity (`"16Gi"`, `"512Mi"`, `"1G"`).

    `"16m"` (16 milli-bytes) is refused: Kubernetes would take it, but it is always a typo for `16Mi`.

    Raises:
        InvalidInput: naming `field`.
    """
    amount = parse_quantity(value, field=field)
    if value.endswith("m"):
        raise InvalidInput(f"{field} {value!r} means milli-bytes; did you mean {value[:-1]}Mi?", param=field)
    if amount <= 0:
        raise InvalidInput(f"{field} must be more than 0, got {value!r}", param=field)
    return value


def validate_gpus(count: int, *, field: str = "gpus") -> int:
    """Return `count` when it is a whole number of GPUs from 0 to `MAX_GPUS`.

    Raises:
        InvalidInput: naming `field`.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_GPUS:
        raise InvalidInput(f"{field} must be a whole number from 0 to {MAX_GPUS}, got {count!r}", param=field)
    return count


def check_request_within_limit(request: str | None, limit: str | None, *, field: str) -> None:
    """Raise when a resource request is above its limit (Kubernetes would refuse the Deployment).

    Raises:
        InvalidInput: naming `field`.
    """
    if request is None or limit is None:
        return
    if parse_quantity(request, field=f"{field}_request") > parse_quantity(limit, field=f"{field}_limit"):
        raise InvalidInput(
            f"{field} request {request!r} is above its limit {limit!r}", param=f"{field}_request"
        )
