"""Kubernetes resource quantities ("500m", "4Gi", 2) as exact numbers. Pure."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """Parse a quantity as Kubernetes does; raises QuantityError with the offending text."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise QuantityError(f"{value!r} is not a quantity")
    m = _QUANTITY.match(value.strip())
    if not m:
        raise QuantityError(f"{value!r} is not a quantity (expected e.g. 2, 500m, 4Gi)")
    number, exponent, suffix = m.group(1), m.group(2), m.group(3) or ""
    if exponent and suffix:
        raise QuantityError(f"{value!r} is not a quantity (exponent and suffix together)")
    try:
        result = Decimal(number) * _SUFFIXES[suffix]
        if exponent:
            result *= Decimal(10) ** int(exponent)
    except InvalidOperation as exc:  # pragma: no cover - regex already guards the shape
        raise QuantityError(f"{value!r} is not a quantity") from exc
    return result


def cpu_cores(value: object) -> Decimal:
    return parse_quantity(value)


def memory_bytes(value: object) -> int:
    """Bytes, rounded up as the kubelet does for fractional byte counts."""
    q = parse_quantity(value)
    whole = int(q)
    return whole if q == whole else whole + 1
