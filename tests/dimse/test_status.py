"""Tests for DIMSE status codes (aiodicom.dimse.status)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicom.dimse import status as st_mod
from aiodicom.dimse.status import Category, Status, category, describe


@pytest.mark.parametrize(
    "code,expected",
    [
        (0x0000, Category.SUCCESS),
        (0x0001, Category.WARNING),
        (0x0107, Category.WARNING),
        (0x0116, Category.WARNING),
        (0xB000, Category.WARNING),
        (0xB006, Category.WARNING),
        (0xB007, Category.WARNING),
        (0xBFFF, Category.WARNING),
        (0xFE00, Category.CANCEL),
        (0xFF00, Category.PENDING),
        (0xFF01, Category.PENDING),
        (0xA700, Category.FAILURE),
        (0xA701, Category.FAILURE),
        (0xA702, Category.FAILURE),
        (0xA801, Category.FAILURE),
        (0xA900, Category.FAILURE),
        (0xAA00, Category.FAILURE),
        (0xC000, Category.FAILURE),
        (0xCFFF, Category.FAILURE),
        (0x0105, Category.FAILURE),
        (0x0110, Category.FAILURE),
        (0x0117, Category.FAILURE),
        (0x0122, Category.FAILURE),
        (0x0124, Category.FAILURE),
        (0x0210, Category.FAILURE),
        (0x0213, Category.FAILURE),
        (0x0002, Category.FAILURE),
        (0xFF02, Category.FAILURE),
        (0xFE01, Category.FAILURE),
    ],
)
def test_category(code: int, expected: Category) -> None:
    assert category(code) is expected
    assert Status(code).category is expected


@given(st.integers(0, 0xFFFF))
def test_exactly_one_predicate(code: int) -> None:
    s = Status(code)
    flags = [s.is_success, s.is_warning, s.is_failure, s.is_cancel, s.is_pending]
    assert sum(flags) == 1
    by_category = {
        Category.SUCCESS: s.is_success,
        Category.WARNING: s.is_warning,
        Category.FAILURE: s.is_failure,
        Category.CANCEL: s.is_cancel,
        Category.PENDING: s.is_pending,
    }
    assert by_category[s.category]
    assert isinstance(describe(code), str) and describe(code)


def test_named_constants() -> None:
    expected = {
        "SUCCESS": 0x0000,
        "PENDING": 0xFF00,
        "PENDING_WARNING": 0xFF01,
        "CANCEL": 0xFE00,
        "OUT_OF_RESOURCES": 0xA700,
        "MATCH_COUNT_OUT_OF_RESOURCES": 0xA701,
        "SUBOPS_OUT_OF_RESOURCES": 0xA702,
        "MOVE_DESTINATION_UNKNOWN": 0xA801,
        "IDENTIFIER_DOES_NOT_MATCH": 0xA900,
        "DATASET_DOES_NOT_MATCH": 0xA900,
        "UNABLE_TO_PROCESS": 0xC000,
        "CANNOT_UNDERSTAND": 0xC000,
        "MORE_THAN_ONE_MATCH": 0xC100,
        "UNSUPPORTED_TEMPLATE": 0xC200,
        "SUBOPS_WARNING": 0xB000,
        "SOP_CLASS_NOT_SUPPORTED": 0x0122,
        "NOT_AUTHORIZED": 0x0124,
        "PROCESSING_FAILURE": 0x0110,
        "DUPLICATE_INVOCATION": 0x0210,
        "UNRECOGNIZED_OPERATION": 0x0211,
        "MISTYPED_ARGUMENT": 0x0212,
        "RESOURCE_LIMITATION": 0x0213,
    }
    for name, value in expected.items():
        assert getattr(st_mod, name) == value, name
    for name in st_mod.__all__:
        assert hasattr(st_mod, name), name


def test_repr_and_str() -> None:
    assert repr(Status(0xA700)) == "Status(0xA700 Failure: out of resources)"
    assert repr(Status(0xFF00)) == "Status(0xFF00 Pending: pending)"
    assert repr(Status(0)) == "Status(0x0000 Success: success)"
    assert repr(Status(0x0122)) == "Status(0x0122 Failure: refused: SOP class not supported)"
    assert str(Status(0xFE00)) == "0xFE00 (Cancel: cancelled)"
    assert f"{Status(0xA801):04X}" == "A801"


def test_descriptions_of_ranges() -> None:
    assert describe(0xA7FF) == "refused: out of resources"
    assert describe(0xA9FF) == "data set / identifier does not match SOP class"
    assert describe(0xC123) == "cannot understand / unable to process"
    assert describe(0xB123) == "warning"
    assert describe(0x1234) == "unknown status"
    assert Status(0xA702).description == "out of resources, unable to perform sub-operations"


def test_status_is_an_immutable_int() -> None:
    s = Status(0xB000)
    assert s == 0xB000 and isinstance(s, int) and hash(s) == hash(0xB000)
    assert {int(s): 1}[0xB000] == 1 and 0xB000 in {s}
    with pytest.raises(AttributeError):
        s.foo = 1  # type: ignore[attr-defined]
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        s.category = Category.SUCCESS  # type: ignore[misc]
    assert Status(Status(5)) == 5


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_status_range(bad: int) -> None:
    with pytest.raises(ValueError):
        Status(bad)
