"""DIMSE status codes (PS3.7 Annex C; service statuses from PS3.4).

:func:`category` classifies a code the way DCMTK's ``dimse.h`` does
(facts sheet 3.4); :class:`Status` is an ``int`` that knows its category and
a short description, so it can go straight into
:attr:`aiodicom.dimse.commands.Command.status`.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "Category",
    "category",
    "describe",
    "Status",
    "SUCCESS",
    "WARNING",
    "PENDING",
    "PENDING_WARNING",
    "CANCEL",
    "OUT_OF_RESOURCES",
    "MATCH_COUNT_OUT_OF_RESOURCES",
    "SUBOPS_OUT_OF_RESOURCES",
    "MOVE_DESTINATION_UNKNOWN",
    "IDENTIFIER_DOES_NOT_MATCH",
    "DATASET_DOES_NOT_MATCH",
    "UNABLE_TO_PROCESS",
    "CANNOT_UNDERSTAND",
    "MORE_THAN_ONE_MATCH",
    "UNSUPPORTED_TEMPLATE",
    "SUBOPS_WARNING",
    "COERCION_OF_DATA_ELEMENTS",
    "ELEMENTS_DISCARDED",
    "DATASET_DOES_NOT_MATCH_WARNING",
    "ATTRIBUTE_LIST_ERROR",
    "ATTRIBUTE_VALUE_OUT_OF_RANGE",
    "PROCESSING_FAILURE",
    "DUPLICATE_SOP_INSTANCE",
    "NO_SUCH_SOP_INSTANCE",
    "INVALID_OBJECT_INSTANCE",
    "NO_SUCH_SOP_CLASS",
    "MISSING_ATTRIBUTE",
    "SOP_CLASS_NOT_SUPPORTED",
    "NOT_AUTHORIZED",
    "DUPLICATE_INVOCATION",
    "UNRECOGNIZED_OPERATION",
    "MISTYPED_ARGUMENT",
    "RESOURCE_LIMITATION",
]


class Category(enum.Enum):
    """Status class of a DIMSE status code (PS3.7 C.1)."""

    SUCCESS = "Success"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"
    PENDING = "Pending"


def category(code: int) -> Category:
    """Classify *code* (PS3.7 Annex C, facts sheet 3.4).

    Success 0x0000; Pending 0xFF00, 0xFF01; Cancel 0xFE00; Warning 0x0001,
    0xBxxx, 0x0107, 0x0116; everything else (0xAxxx, 0xCxxx, 0x01xx,
    0x02xx and unknown codes) is a failure.
    """
    if code == 0x0000:
        return Category.SUCCESS
    if code == 0xFF00 or code == 0xFF01:
        return Category.PENDING
    if code == 0xFE00:
        return Category.CANCEL
    if (code & 0xF000) == 0xB000 or code in (0x0001, 0x0107, 0x0116):
        return Category.WARNING
    return Category.FAILURE


# --- Named codes -------------------------------------------------------------
SUCCESS: Final = 0x0000
WARNING: Final = 0x0001
PENDING: Final = 0xFF00
PENDING_WARNING: Final = 0xFF01  # pending, some optional keys not supported
CANCEL: Final = 0xFE00
# Q/R and Storage (PS3.4 B.2.3, C.4.x)
OUT_OF_RESOURCES: Final = 0xA700
MATCH_COUNT_OUT_OF_RESOURCES: Final = 0xA701
SUBOPS_OUT_OF_RESOURCES: Final = 0xA702
MOVE_DESTINATION_UNKNOWN: Final = 0xA801
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
DATASET_DOES_NOT_MATCH: Final = 0xA900
UNABLE_TO_PROCESS: Final = 0xC000
CANNOT_UNDERSTAND: Final = 0xC000
MORE_THAN_ONE_MATCH: Final = 0xC100  # Relevant Patient Information Query
UNSUPPORTED_TEMPLATE: Final = 0xC200  # Relevant Patient Information Query
SUBOPS_WARNING: Final = 0xB000
COERCION_OF_DATA_ELEMENTS: Final = 0xB000
ELEMENTS_DISCARDED: Final = 0xB006
DATASET_DOES_NOT_MATCH_WARNING: Final = 0xB007
# General (PS3.7 C.4-C.5)
ATTRIBUTE_LIST_ERROR: Final = 0x0107
ATTRIBUTE_VALUE_OUT_OF_RANGE: Final = 0x0116
PROCESSING_FAILURE: Final = 0x0110
DUPLICATE_SOP_INSTANCE: Final = 0x0111
NO_SUCH_SOP_INSTANCE: Final = 0x0112
INVALID_OBJECT_INSTANCE: Final = 0x0117
NO_SUCH_SOP_CLASS: Final = 0x0118
MISSING_ATTRIBUTE: Final = 0x0120
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
NOT_AUTHORIZED: Final = 0x0124
DUPLICATE_INVOCATION: Final = 0x0210
UNRECOGNIZED_OPERATION: Final = 0x0211
MISTYPED_ARGUMENT: Final = 0x0212
RESOURCE_LIMITATION: Final = 0x0213

# Exact-code descriptions.  Several codes mean different things in different
# services (0xA900, 0xB000, 0xC000); the text covers both readings.
_DESCRIPTIONS: Final[dict[int, str]] = {
    0x0000: "success",
    0x0001: "warning",
    0xFF00: "pending",
    0xFF01: "pending, some optional keys not supported",
    0xFE00: "cancelled",
    0xA700: "out of resources",
    0xA701: "out of resources, unable to calculate number of matches",
    0xA702: "out of resources, unable to perform sub-operations",
    0xA801: "move destination unknown",
    0xA900: "data set / identifier does not match SOP class",
    0xB000: "coercion of data elements / sub-operations complete with failures or warnings",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0xC000: "cannot understand / unable to process",
    0xC100: "more than one match found",
    0xC200: "unable to support requested template",
    0x0105: "no such attribute",
    0x0106: "invalid attribute value",
    0x0107: "attribute list error",
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0112: "no such SOP instance",
    0x0113: "no such event type",
    0x0114: "no such argument",
    0x0115: "invalid argument value",
    0x0116: "attribute value out of range",
    0x0117: "invalid object instance",
    0x0118: "no such SOP class",
    0x0119: "class-instance conflict",
    0x0120: "missing attribute",
    0x0121: "missing attribute value",
    0x0122: "refused: SOP class not supported",
    0x0123: "no such action",
    0x0124: "refused: not authorized",
    0x0210: "duplicate invocation",
    0x0211: "unrecognized operation",
    0x0212: "mistyped argument",
    0x0213: "resource limitation",
}


def describe(code: int) -> str:
    """A short human description of *code* (never raises)."""
    text = _DESCRIPTIONS.get(code)
    if text is not None:
        return text
    high = code & 0xFF00
    if high == 0xA700:
        return "refused: out of resources"
    if high == 0xA900:
        return "data set / identifier does not match SOP class"
    if (code & 0xF000) == 0xC000:
        return "cannot understand / unable to process"
    if (code & 0xF000) == 0xB000:
        return "warning"
    return "unknown status"


class Status(int):
    """A DIMSE status code: an immutable ``int`` with helpers.

    >>> Status(0xA700)
    Status(0xA700 Failure: out of resources)
    >>> Status(0xFF00).is_pending
    True
    """

    __slots__ = ()

    def __new__(cls, code: int) -> Status:
        value = int(code)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"status code {code!r} is not a 16-bit value")
        return super().__new__(cls, value)

    @property
    def category(self) -> Category:
        """The status class (:class:`Category`)."""
        return category(self)

    @property
    def description(self) -> str:
        """A short description, e.g. ``"out of resources"``."""
        return describe(self)

    @property
    def is_success(self) -> bool:
        """True for 0x0000."""
        return self == 0

    @property
    def is_pending(self) -> bool:
        """True for 0xFF00 and 0xFF01."""
        return self == 0xFF00 or self == 0xFF01

    @property
    def is_cancel(self) -> bool:
        """True for 0xFE00."""
        return self == 0xFE00

    @property
    def is_warning(self) -> bool:
        """True for the warning class (0x0001, 0xBxxx, 0x0107, 0x0116)."""
        return category(self) is Category.WARNING

    @property
    def is_failure(self) -> bool:
        """True for the failure class (everything not listed elsewhere)."""
        return category(self) is Category.FAILURE

    def __repr__(self) -> str:
        return f"Status(0x{int(self):04X} {category(self).value}: {describe(self)})"

    def __str__(self) -> str:
        return f"0x{int(self):04X} ({category(self).value}: {describe(self)})"
