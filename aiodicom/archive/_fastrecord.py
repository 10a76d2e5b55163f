"""Index record straight from encoded bytes, without pydicom (the store hot path).

:func:`fast_record` walks the elements of an Implicit or Explicit VR Little
Endian data set (PS3.5 7.1) up to the last attribute the index holds and
builds the same :class:`~aiodicom.archive.index.InstanceRecord` as
``record_from_dataset(read_header_from_fragments(...))``, about ten times
faster.  It is deliberately narrow: whenever the result could differ from
pydicom's reading -- another transfer syntax, a character set other than
the default / ISO_IR 100 / ISO_IR 192, non-ASCII text without a character
set, an IS value pydicom would reject, a UN element of undefined length,
anything malformed, or a header that does not fit in the bytes given -- it
returns ``None`` and the caller takes the pydicom path.
``tests/archive/test_fastrecord.py`` checks equality on every pydicom test
file.
"""

from __future__ import annotations

import struct
from typing import Final

from .index import _COLUMNS, InstanceRecord, record_from_rows
from .matching import ATTRIBUTES, SEQUENCES, Attr, normalize_value

__all__ = ["fast_record", "HEADER_WINDOW"]

#: Bytes of the data set the fast path looks at; a header reaching past
#: them goes to pydicom.
HEADER_WINDOW: Final = 64 * 1024

_IMPLICIT: Final = "1.2.840.10008.1.2"
_EXPLICIT: Final = "1.2.840.10008.1.2.1"

_TOP: Final[dict[int, Attr]] = {a.tag: a for a in ATTRIBUTES if a.column is not None and a.extract}
_SEQ: Final = {s.tag: s for s in SEQUENCES}
_LAST: Final = max(list(_TOP) + list(_SEQ))
_CHARSET: Final = 0x00080005
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQ_END: Final = 0xFFFEE0DD
_UNDEFINED: Final = 0xFFFFFFFF
# Explicit VR: these VRs have a 2-byte reserved field and a 4-byte length.
_LONG_VRS: Final = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ENCODINGS: Final = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}

_TAG_LEN = struct.Struct("<HHI")
_TAG_VR_LEN16 = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")


class _Decline(Exception):
    """Leave this data set to pydicom."""


class _Walker:
    __slots__ = ("buf", "end", "implicit", "complete")

    def __init__(self, buf: memoryview, implicit: bool, complete: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.implicit = implicit
        self.complete = complete  # buf holds the whole data set

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, vr or None, value length, value offset) of the element at *pos*."""
        buf = self.buf
        if pos + 8 > self.end:
            raise _Decline
        group, elem, length = _TAG_LEN.unpack_from(buf, pos)
        tag = group << 16 | elem
        if self.implicit or group == 0xFFFE:
            return tag, None, length, pos + 8
        group, elem, vr, short = _TAG_VR_LEN16.unpack_from(buf, pos)
        if vr in _LONG_VRS:
            if pos + 12 > self.end:
                raise _Decline
            return tag, vr, _U32.unpack_from(buf, pos + 8)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _Decline  # not a VR: malformed, or implicit data in an explicit set
        return tag, vr, short, pos + 8

    def skip_sequence(self, pos: int) -> int:
        """Skip items up to the Sequence Delimitation Item; return the offset after it."""
        while True:
            tag, _vr, length, pos = self.header(pos)
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise _Decline
            pos = self.skip_item_body(pos, length)

    def skip_item_body(self, pos: int, length: int) -> int:
        if length != _UNDEFINED:
            return pos + length
        while True:
            tag, vr, vlen, pos = self.header(pos)
            if tag == _ITEM_END:
                return pos
            pos = self.skip_value(pos, vr, vlen)

    def skip_value(self, pos: int, vr: bytes | None, length: int) -> int:
        if length != _UNDEFINED:
            return pos + length
        if vr == b"UN":
            raise _Decline  # implicit VR inside: leave it to pydicom
        return self.skip_sequence(pos)

    def first_item(self, pos: int, length: int) -> tuple[dict[int, bytes], int]:
        """Raw values of the first item of the sequence whose value starts at *pos*; offset after it."""
        values: dict[int, bytes] = {}
        end = None if length == _UNDEFINED else pos + length
        first = True
        while end is None or pos < end:
            tag, _vr, ilen, pos = self.header(pos)
            if tag == _SEQ_END and end is None:
                return values, pos
            if tag != _ITEM:
                raise _Decline
            if not first:
                pos = self.skip_item_body(pos, ilen)
                continue
            first = False
            iend = None if ilen == _UNDEFINED else pos + ilen
            while iend is None or pos < iend:
                etag, evr, elen, pos = self.header(pos)
                if etag == _ITEM_END and iend is None:
                    break
                if elen == _UNDEFINED:
                    pos = self.skip_value(pos, evr, elen)
                    continue
                if pos + elen > self.end:
                    raise _Decline
                values[etag] = bytes(self.buf[pos : pos + elen])
                pos += elen
        return values, pos


# VRs pydicom decodes with the Specific Character Set; the others are ASCII.
_TEXT_VRS: Final = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})


def _text(raw: bytes, attr: Attr, encoding: str) -> str | None:
    """The stored text of one attribute, as ``index._value_text`` makes it from pydicom's value."""
    if attr.vr not in _TEXT_VRS and not raw.isascii():
        raise _Decline
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise _Decline from None
    if attr.vr == "UI":
        text = text.rstrip("\x00")
    parts = text.split("\\")
    if attr.vr == "IS":
        for p in parts:
            p = p.strip()
            if p:
                try:
                    int(p)
                except ValueError:
                    raise _Decline from None  # pydicom may reject or reformat it
    if len(parts) > 1:
        out = [normalize_value(attr.vr, p.rstrip("\x00") if attr.vr == "UI" else p) for p in parts]
        out = [p for p in out if p]
        if not out:
            return None
        return out[0] if attr.vr == "UI" else "\\".join(out)
    value = normalize_value(attr.vr, text).rstrip("\x00")
    return value or None


def fast_record(data: bytes | bytearray | memoryview, transfer_syntax: str, complete: bool) -> InstanceRecord | None:
    """The index record of the encoded data set *data* (its first bytes), or None.

    *complete* says *data* is the whole data set (not a prefix of it).
    Raises :class:`InvalidInstanceError` like ``record_from_dataset`` when a
    required UID is missing.
    """
    ts = transfer_syntax.rstrip("\x00 ")
    if ts not in (_IMPLICIT, _EXPLICIT):
        return None
    w = _Walker(memoryview(data).cast("B"), ts == _IMPLICIT, complete)
    raw: dict[int, bytes] = {}
    items: dict[int, dict[int, bytes] | None] = {}
    pos = 0
    try:
        while True:
            if pos >= w.end:
                if not w.complete:
                    return None  # the header may go on past the window
                break
            tag, vr, length, vpos = w.header(pos)
            if tag > _LAST:
                break
            if tag in _SEQ:
                items[tag], pos = w.first_item(vpos, length)
                continue
            if length == _UNDEFINED:
                pos = w.skip_value(vpos, vr, length)
                continue
            if vpos + length > w.end:
                return None
            if tag in _TOP or tag == _CHARSET:
                raw[tag] = bytes(w.buf[vpos : vpos + length])
            pos = vpos + length
        charset = raw.get(_CHARSET, b"").decode("ascii", "replace").strip(" \x00")
        encoding = _ENCODINGS.get(charset)
        if encoding is None:
            return None
        if encoding == "ascii":
            # without a character set pydicom decodes with its own default;
            # only plain ASCII is certain to match
            for v in raw.values():
                if not v.isascii():
                    return None
        rows: dict[str, dict[str, str | None]] = {e: {} for e in _COLUMNS}
        for tag, attr in _TOP.items():
            value = raw.get(tag)
            text = _text(value, attr, encoding) if value is not None else None
            row = rows[attr.entity]
            assert attr.column is not None
            row[attr.column] = text
            if attr.ci_column is not None:
                row[attr.ci_column] = text.lower() if text is not None else None
        for seq in SEQUENCES:
            item = items.get(seq.tag)
            for a in seq.items:
                assert a.column is not None
                sub = item.get(a.tag) if item else None
                if sub is not None and encoding == "ascii" and not sub.isascii():
                    return None
                rows[seq.entity][a.column] = _text(sub, a, encoding) if sub is not None else None
    except (_Decline, struct.error):
        return None
    return record_from_rows(rows)
