"""Kubernetes resource quantities ("500m", "4Gi", 2) as exact numbers. Pure."""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(
    r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(?:[eE]([+-]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)


# Kubernetes caps every quantity at 2^63-1 in magnitude; anything larger is a mistake here.
MAX_QUANTITY = Decimal(2**63 - 1)


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """Parse a quantity as Kubernetes does; raises QuantityError with the offending text."""
    if isinstance(value, bool):
        raise QuantityError(f"{_show(value)} is not a quantity")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(f"{_show(value)} is not a quantity")
    if isinstance(value, int | float):
        return _bounded(Decimal(str(value)), value)
    if not isinstance(value, str):
        raise QuantityError(f"{_show(value)} is not a quantity")
    m = _QUANTITY.fullmatch(value)  # no strip: the API server's isQuantity() rejects surrounding spaces too
    if not m:
        raise QuantityError(f"{_show(value)} is not a quantity (expected e.g. 2, 500m, 4Gi)")
    number, exponent, suffix = m.group(1), m.group(2), m.group(3) or ""
    if exponent and suffix:
        raise QuantityError(f"{_show(value)} is not a quantity (exponent and suffix together)")
    try:  # exact construction: a huge exponent must not overflow Decimal's context
        result = Decimal(f"{number}e{exponent}") if exponent else Decimal(number) * _SUFFIXES[suffix]
    except ArithmeticError as exc:
        raise QuantityError(f"{_show(value)} is out of range") from exc
    return _bounded(result, value)


def _bounded(result: Decimal, value: object) -> Decimal:
    if result.copy_abs() > MAX_QUANTITY:
        raise QuantityError(f"{_show(value)} is out of range (at most {MAX_QUANTITY})")
    return result


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def cpu_cores(value: object) -> Decimal:
    return parse_quantity(value)


def memory_bytes(value: object) -> int:
    """Bytes, rounded up as the kubelet does for fractional byte counts."""
    q = parse_quantity(value)
    whole = int(q)
    return whole if q == whole else whole + 1
