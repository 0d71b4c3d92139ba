"""Kubernetes resource quantities, parsed exactly as the API server would accept them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from swarm_operator.quantity import MAX_QUANTITY, QuantityError, cpu_cores, memory_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Decimal(1)),
        ("0", Decimal(0)),
        ("500m", Decimal("0.5")),
        ("1500m", Decimal("1.5")),
        ("100n", Decimal("0.0000001")),
        ("5u", Decimal("0.000005")),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1.", Decimal(1)),
        ("+2", Decimal(2)),
        ("-1", Decimal(-1)),
        ("-500m", Decimal("-0.5")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("4G", Decimal(4 * 10**9)),
        ("2T", Decimal(2 * 10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),  # a suffix (exa), not an exponent
        ("1Ki", Decimal(1024)),
        ("1Mi", Decimal(2**20)),
        ("2Gi", Decimal(2 * 2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("7Ei", Decimal(7 * 2**60)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("2.5e2", Decimal(250)),
        ("1e-3", Decimal("0.001")),
        ("1e+3", Decimal(1000)),
        ("9223372036854775807", Decimal(2**63 - 1)),
        (2, Decimal(2)),
        (0, Decimal(0)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse(text: object, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="word"),
        pytest.param("Gi", id="suffix-only"),
        pytest.param("1K", id="upper-k"),
        pytest.param("1GB", id="GB"),
        pytest.param("1gi", id="lower-gi"),
        pytest.param("1 Gi", id="inner-space"),
        pytest.param("1..2", id="two-dots"),
        pytest.param("1.5.5Gi", id="two-dots-suffix"),
        pytest.param("1e3Ki", id="exponent-and-suffix"),
        pytest.param("1e", id="dangling-exponent"),
        pytest.param("0x10", id="hex"),
        pytest.param("1_000", id="underscore"),
        pytest.param("1Gi\n", id="trailing-newline"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("--1", id="double-sign"),
        pytest.param("1e19", id="above-2^63"),
        pytest.param("8Ei", id="8Ei-above-2^63"),
        pytest.param("9223372036854775808", id="2^63"),
        pytest.param("-1e19", id="far-negative"),
        pytest.param("1e1000000000", id="huge-exponent"),
        pytest.param("1e" + "9" * 5000, id="exponent-longer-than-int-limit"),
        pytest.param("9" * 5000, id="5000-digits"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="none"),
        pytest.param([1], id="list"),
        pytest.param({"cpu": 1}, id="dict"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(2**64, id="int-above-2^63"),
    ],
)
def test_rejects(text: object) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) < 150, "messages quote a shortened value"


def test_error_quotes_the_value() -> None:
    with pytest.raises(QuantityError, match="'4GB' is not a quantity"):
        parse_quantity("4GB")


def test_limit_is_2_to_the_63_minus_1() -> None:
    assert MAX_QUANTITY == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1500Mi", 1500 * 2**20),
        ("0.5Ki", 512),
        ("1.5", 2),  # fractional bytes round up, as the kubelet does
        ("100m", 1),
        ("1", 1),
        (4096, 4096),
        ("1e9", 10**9),
    ],
)
def test_memory_bytes(text: object, expected: int) -> None:
    value = memory_bytes(text)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), (4, Decimal(4)), ("0.1", Decimal("0.1")), ("1k", Decimal(1000))],
)
def test_cpu_cores(text: object, expected: Decimal) -> None:
    assert cpu_cores(text) == expected


@pytest.mark.parametrize("func", [cpu_cores, memory_bytes])
def test_helpers_reject_junk(func: object) -> None:
    assert callable(func)
    with pytest.raises(QuantityError):
        func("lots")
