"""Fast encoder for small, flat data sets (C-FIND identifiers).

pydicom's ``write_dataset`` costs ~200 us for a ten-element identifier; a
C-FIND SCP answering thousands of matches pays that per response.  This
module encodes the common case directly: little endian (implicit or
explicit VR), elements whose VR is a text or small binary number VR and
whose value is already a Python value (not a raw element).  Anything else
(sequences, bulk data, non-default character sets, raw elements) makes
:func:`encode_flat` return None and the caller falls back to pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["encode_flat"]

_TAG = struct.Struct("<HH")
_IMPLICIT_HDR = struct.Struct("<HHL")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2sHL")

# Text VRs (PS3.5 6.2) encoded as ASCII/ISO 646 here; values joined by "\".
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
# VRs with a 4-byte length in explicit VR (PS3.5 7.1.2)
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_NUM_FORMATS = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l", "FL": "<f", "FD": "<d"}


def _text(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts = []
        for v in value:
            t = _text(v)
            if t is None:
                return None
            parts.append(t)
        return "\\".join(parts)
    if isinstance(value, (int, float)):
        # pydicom's IS/DS/PersonName keep their original string where they have one
        original = getattr(value, "original_string", None)
        return original if isinstance(original, str) else str(value)
    if type(value).__name__ == "PersonName":
        return str(value)
    return None


def encode_flat(ds: Any, implicit: bool) -> bytes | None:
    """Encode ``ds`` in little endian, or return None if it is not flat/simple."""
    charset = ds.get("SpecificCharacterSet") if "SpecificCharacterSet" in ds else None
    if charset and str(charset).strip() not in ("", "ISO_IR 6", "ISO 2022 IR 6"):
        return None
    parts: list[bytes] = []
    append = parts.append
    for elem in ds.elements():
        if type(elem).__name__ == "RawDataElement":
            return None  # still encoded as read: let pydicom handle it
        vr = elem.VR
        tag = int(elem.tag)
        if not isinstance(vr, str):
            return None
        group = tag >> 16
        if group in (0x0000, 0x0002):
            continue
        value = elem.value
        if vr in _TEXT_VRS:
            text = _text(value)
            if text is None:
                return None
            try:
                raw = text.encode("ascii")
            except UnicodeEncodeError:
                return None
            if len(raw) & 1:
                raw += b" "
        elif vr == "UI":
            text = _text(value)
            if text is None:
                return None
            try:
                raw = text.encode("ascii")
            except UnicodeEncodeError:
                return None
            if len(raw) & 1:
                raw += b"\x00"
        elif vr in _NUM_FORMATS:
            if value is None or value == "":
                raw = b""
            else:
                values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
                try:
                    raw = b"".join(struct.pack(_NUM_FORMATS[vr], v) for v in values)
                except (struct.error, TypeError):
                    return None
        elif vr == "SQ" and (value is None or len(value) == 0):
            raw = b""
        else:
            return None
        element = tag & 0xFFFF
        if implicit:
            append(_IMPLICIT_HDR.pack(group, element, len(raw)))
        elif vr in _LONG_VRS:
            append(_EXPLICIT_LONG.pack(group, element, vr.encode(), 0, len(raw)))
        else:
            if len(raw) > 0xFFFF:
                return None
            append(_EXPLICIT_SHORT.pack(group, element, vr.encode(), len(raw)))
        append(raw)
    return b"".join(parts)
