"""Encoded data sets: the bytes of a DICOM data set plus its transfer syntax.

A data set travels through aiodicom (network, archive, Part 10 files) as its
encoded bytes -- a list of buffer fragments, exactly as they arrived in P-DATA
PDVs or were read from disk -- together with the transfer syntax UID that
describes the encoding.  It is only decoded with pydicom when somebody asks
(:meth:`EncodedDataset.decode`), and cheap look-ups such as
:meth:`EncodedDataset.sop_uids` decode only the first few elements.

Encoding rules by transfer syntax (PS3.5 Section 10, Annex A):

* Implicit VR Little Endian: implicit VR, little endian.
* Explicit VR Big Endian: explicit VR, big endian.
* Deflated Explicit VR Little Endian (and the two JPIP *Deflate* syntaxes):
  explicit VR little endian, the whole data set compressed with raw deflate
  (RFC 1951, no zlib header), padded with one NUL byte to an even length.
* Everything else (Explicit VR Little Endian, all encapsulated/compressed
  syntaxes and unknown/private UIDs): explicit VR little endian.  For
  encapsulated syntaxes the Pixel Data is an undefined-length sequence of
  fragments, which pydicom reads and writes natively.
"""

from __future__ import annotations

from ._fastenc import encode_flat

import zlib
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import NamedTuple, Union

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from aiodicom.uids import (
    COMPRESSED_TRANSFER_SYNTAXES,
    DEFLATED_TRANSFER_SYNTAXES,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

__all__ = [
    "Buffer",
    "DatasetDecodeError",
    "EncodedDataset",
    "TransferSyntaxEncoding",
    "decode_identifier",
    "encode_identifier",
    "transfer_syntax_encoding",
]

#: A contiguous read-only-or-writable byte buffer accepted as a fragment.
Buffer = Union[bytes, bytearray, memoryview]

_PIXEL_DATA_TAG = 0x7FE00010
_SOP_CLASS_UID_TAG = 0x00080016
_SOP_INSTANCE_UID_TAG = 0x00080018
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
#: First prefix size tried by :meth:`EncodedDataset.sop_uids`.
_SOP_UID_PREFIX = 64 * 1024


class DatasetDecodeError(ValueError):
    """The encoded bytes could not be decoded as a data set."""


class TransferSyntaxEncoding(NamedTuple):
    """How a data set is encoded in a given transfer syntax."""

    #: ``True`` for implicit VR, ``False`` for explicit VR.
    implicit_vr: bool
    #: ``True`` for little endian, ``False`` for big endian.
    little_endian: bool
    #: ``True`` if the whole data set is raw-deflate compressed.
    deflated: bool
    #: ``True`` if the Pixel Data is encapsulated (compressed syntaxes).
    encapsulated: bool


def transfer_syntax_encoding(transfer_syntax: str) -> TransferSyntaxEncoding:
    """Return the data set encoding used by *transfer_syntax*.

    Unknown (e.g. private) transfer syntaxes are assumed to be Explicit VR
    Little Endian with native Pixel Data; pydicom's reader additionally
    detects an implicit VR data set on its own when decoding.
    """
    ts = transfer_syntax.rstrip("\x00 ")
    if ts == ImplicitVRLittleEndian:
        return TransferSyntaxEncoding(True, True, False, False)
    if ts == ExplicitVRBigEndian:
        return TransferSyntaxEncoding(False, False, False, False)
    if ts in DEFLATED_TRANSFER_SYNTAXES:
        return TransferSyntaxEncoding(False, True, True, False)
    return TransferSyntaxEncoding(False, True, False, ts in COMPRESSED_TRANSFER_SYNTAXES)


def _inflate(fragments: Iterable[Buffer]) -> bytes:
    """Inflate a raw-deflate stream given as fragments.

    Trailing bytes after the end of the stream (the even-length NUL pad) are
    ignored.  Streams written with a zlib or gzip header by non-conformant
    implementations are accepted as a fallback.
    """
    frags = list(fragments)
    try:
        return _inflate_with(frags, -zlib.MAX_WBITS)
    except zlib.error as raw_exc:
        try:
            # 32 + MAX_WBITS: auto-detect zlib or gzip header.
            return _inflate_with(frags, 32 + zlib.MAX_WBITS)
        except zlib.error:
            raise DatasetDecodeError(f"cannot inflate deflated data set: {raw_exc}") from raw_exc


def _inflate_with(fragments: list[Buffer], wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    for frag in fragments:
        if inflater.eof:
            break
        out += inflater.decompress(frag)
    if not inflater.eof:
        out += inflater.flush()
        if not inflater.eof:
            raise zlib.error("deflate stream is truncated")
    return bytes(out)


def _inflate_prefix(fragments: Iterable[Buffer], limit: int) -> tuple[bytes, bool]:
    """Inflate at most about *limit* bytes; return ``(data, complete)``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    for frag in fragments:
        out += inflater.decompress(frag, max(limit - len(out), 1))
        if inflater.eof:
            return bytes(out), True
        if len(out) >= limit:
            return bytes(out), False
    return bytes(out), inflater.eof


def _attach_transfer_syntax(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta


def _read(
    data: Buffer | BytesIO,
    encoding: TransferSyntaxEncoding,
    *,
    stop_when: Callable[[BaseTag, str | None, int], bool] | None = None,
    specific_tags: list[int] | None = None,
) -> Dataset:
    """Decode *data* (bytes or a positioned BytesIO) with pydicom."""
    fp = data if isinstance(data, BytesIO) else BytesIO(data)
    try:
        ds = read_dataset(
            fp,
            encoding.implicit_vr,
            encoding.little_endian,
            stop_when=stop_when,
            specific_tags=list(specific_tags) if specific_tags else None,
        )
    except Exception as exc:  # pydicom raises a variety of exception types
        raise DatasetDecodeError(f"cannot decode data set: {exc}") from exc
    return ds


def _scan_sop_uids(
    data: bytes, encoding: TransferSyntaxEncoding, complete: bool
) -> tuple[Dataset, bool]:
    """Parse only (0008,0016)/(0008,0018) from *data*.

    *complete* says whether *data* is the whole data set or just a prefix.
    Returns the partial data set and whether it is conclusive: parsing stopped
    at an element after (0008,0018), or the whole data set was seen.  An
    element whose value would run past the end of a prefix stops the parse
    (inconclusive) instead of being read truncated.
    """
    fp = BytesIO(data)
    size = len(data)
    conclusive = complete

    def stop_when(tag: BaseTag, vr: str | None, length: int) -> bool:
        nonlocal conclusive
        if tag > _SOP_INSTANCE_UID_TAG:
            conclusive = True
            return True
        # fp is positioned at the start of the value here.
        return not complete and length != 0xFFFFFFFF and fp.tell() + length > size

    ds = _read(
        fp,
        encoding,
        stop_when=stop_when,
        specific_tags=[_SOP_CLASS_UID_TAG, _SOP_INSTANCE_UID_TAG],
    )
    return ds, conclusive


def _uid_value(ds: Dataset, tag: int) -> str | None:
    if tag not in ds:
        return None
    try:
        value = ds[tag].value
    except Exception as exc:
        raise DatasetDecodeError(f"cannot decode ({tag >> 16:04X},{tag & 0xFFFF:04X}): {exc}") from exc
    if value is None:
        return None
    text = str(value).rstrip("\x00 ")
    return text or None


class EncodedDataset:
    """An encoded DICOM data set: buffer *fragments* plus *transfer_syntax*.

    The fragments are kept as given (no copy, no join) until someone needs a
    contiguous buffer; :meth:`decode` decodes them with pydicom once and
    caches the result.

    The object is not meant to be mutated after construction; if you change
    ``fragments`` call :meth:`invalidate` to drop the cached decoding.
    """

    __slots__ = ("fragments", "transfer_syntax", "_decoded")

    fragments: list[Buffer]
    transfer_syntax: str

    def __init__(self, fragments: Buffer | Iterable[Buffer], transfer_syntax: str) -> None:
        """Wrap *fragments* (a buffer or an iterable of buffers).

        *transfer_syntax* is the transfer syntax UID the bytes are encoded in;
        trailing NUL/space padding is stripped.
        """
        if isinstance(fragments, (bytes, bytearray, memoryview)):
            self.fragments = [fragments]
        else:
            self.fragments = list(fragments)
        self.transfer_syntax = transfer_syntax.rstrip("\x00 ")
        self._decoded: Dataset | None = None

    # -- buffer access -------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Total encoded length in bytes (sum of the fragment lengths)."""
        return sum(memoryview(f).nbytes for f in self.fragments)

    def __len__(self) -> int:
        """Total encoded length in bytes; same as :attr:`nbytes`."""
        return self.nbytes

    def __iter__(self) -> Iterator[Buffer]:
        """Iterate over the fragments."""
        return iter(self.fragments)

    def tobytes(self) -> bytes:
        """Return the encoded data set as one :class:`bytes` object."""
        if len(self.fragments) == 1 and isinstance(self.fragments[0], bytes):
            return self.fragments[0]
        return b"".join(self.fragments)

    def __repr__(self) -> str:
        return (
            f"<EncodedDataset {self.nbytes} bytes in {len(self.fragments)} "
            f"fragment(s), transfer syntax {self.transfer_syntax}>"
        )

    @property
    def encoding(self) -> TransferSyntaxEncoding:
        """The :class:`TransferSyntaxEncoding` of :attr:`transfer_syntax`."""
        return transfer_syntax_encoding(self.transfer_syntax)

    @property
    def is_decoded(self) -> bool:
        """Whether :meth:`decode` has already been called (result cached)."""
        return self._decoded is not None

    def invalidate(self) -> None:
        """Drop the cached decoded data set."""
        self._decoded = None

    # -- decoding ------------------------------------------------------------

    def _plain_bytes(self) -> bytes:
        """The (inflated, if deflated) data set bytes."""
        if self.encoding.deflated:
            return _inflate(self.fragments)
        return self.tobytes()

    def decode(self) -> Dataset:
        """Decode with pydicom and return the :class:`~pydicom.dataset.Dataset`.

        The result is cached: later calls return the *same* object, so treat
        it as read-only (or deep-copy it) if the encoded form must stay in
        sync.  ``ds.file_meta.TransferSyntaxUID`` is set to
        :attr:`transfer_syntax` so that pydicom's pixel data handling knows
        how the Pixel Data is encoded.

        Raises :class:`DatasetDecodeError` when the bytes cannot be decoded.
        """
        if self._decoded is None:
            ds = _read(self._plain_bytes(), self.encoding)
            _attach_transfer_syntax(ds, self.transfer_syntax)
            self._decoded = ds
        return self._decoded

    def sop_uids(self) -> tuple[str, str]:
        """Return ``(SOPClassUID, SOPInstanceUID)`` of the data set.

        Decodes only what is needed: a prefix of the encoded bytes is parsed
        with ``specific_tags`` and a ``stop_when`` callback that stops at the
        first element after (0008,0018); only if the prefix is not enough is
        the whole data set parsed.  Uses the cached decoding if any.

        Raises :class:`DatasetDecodeError` if either UID is absent or the data
        set cannot be decoded.
        """
        if self._decoded is not None:
            return self._require_uids(self._decoded)

        encoding = self.encoding
        # First try a prefix: the SOP UIDs are almost always near the start.
        if encoding.deflated:
            try:
                prefix, complete = _inflate_prefix(self.fragments, _SOP_UID_PREFIX)
            except zlib.error:
                prefix, complete = b"", False
        else:
            prefix, complete = self._raw_prefix(_SOP_UID_PREFIX)
        if prefix or complete:
            ds, conclusive = _scan_sop_uids(prefix, encoding, complete)
            if conclusive:
                return self._require_uids(ds)

        # Fall back to the whole data set (still skipping undesired values).
        ds, _ = _scan_sop_uids(self._plain_bytes(), encoding, True)
        return self._require_uids(ds)

    def _raw_prefix(self, limit: int) -> tuple[bytes, bool]:
        """Return the first ``min(limit, nbytes)`` bytes and whether that is all."""
        parts: list[bytes] = []
        size = 0
        for frag in self.fragments:
            view = memoryview(frag).cast("B")
            if size + view.nbytes > limit:
                parts.append(bytes(view[: limit - size]))
                return b"".join(parts), False
            parts.append(bytes(view))
            size += view.nbytes
        return b"".join(parts), True

    @staticmethod
    def _require_uids(ds: Dataset) -> tuple[str, str]:
        sop_class = _uid_value(ds, _SOP_CLASS_UID_TAG)
        sop_instance = _uid_value(ds, _SOP_INSTANCE_UID_TAG)
        missing = [
            name
            for name, value in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_instance))
            if value is None
        ]
        if sop_class is None or sop_instance is None:
            raise DatasetDecodeError(f"data set has no {' or '.join(missing)}")
        return sop_class, sop_instance

    # -- encoding ------------------------------------------------------------

    @classmethod
    def from_dataset(cls, ds: Dataset, transfer_syntax: str) -> EncodedDataset:
        """Encode the pydicom Dataset *ds* in *transfer_syntax*.

        * Command (0000,eeee) and File Meta (0002,eeee) elements are never part
          of a data set and are omitted; ``ds.file_meta`` is ignored.
        * For encapsulated (compressed) transfer syntaxes *ds* must already
          hold encapsulated Pixel Data; for native syntaxes it must not.
          :class:`ValueError` is raised otherwise.  Pixel Data is never
          compressed, decompressed or byte-swapped here.
        * Values of OB/OW/OF/OD/OL/OV/UN elements are written verbatim (as
          pydicom does): converting between little and big endian does not
          swap their bytes.
        * As with :func:`pydicom.dcmwrite`, pydicom may correct ambiguous VRs
          of *ds* in place when the target encoding differs from the one *ds*
          was read with.
        """
        ts = transfer_syntax.rstrip("\x00 ")
        encoding = transfer_syntax_encoding(ts)
        source = _without_non_dataset_groups(ds)

        restore_undefined: tuple[DataElement, bool] | None = None
        if _PIXEL_DATA_TAG in source:
            elem = source[_PIXEL_DATA_TAG]
            value = elem.value
            has_value = value is not None and (
                not isinstance(value, (bytes, bytearray, memoryview)) or len(value) > 0
            )
            if encoding.encapsulated:
                if has_value and isinstance(value, (bytes, bytearray, memoryview)):
                    if bytes(value[:4]) != _ITEM_TAG_LE:
                        raise ValueError(
                            f"transfer syntax {ts} requires encapsulated Pixel Data, "
                            "but the data set holds native Pixel Data"
                        )
                if not elem.is_undefined_length:
                    restore_undefined = (elem, False)
                    elem.is_undefined_length = True
            elif elem.is_undefined_length:
                if has_value:
                    raise ValueError(
                        f"transfer syntax {ts} requires native Pixel Data, but the "
                        "data set holds encapsulated (compressed) Pixel Data; "
                        "decompress it first"
                    )

        fp = DicomBytesIO()
        fp.is_implicit_VR = encoding.implicit_vr
        fp.is_little_endian = encoding.little_endian
        try:
            write_dataset(fp, source)
        finally:
            if restore_undefined is not None:
                restore_undefined[0].is_undefined_length = restore_undefined[1]
        data: bytes = fp.getvalue()

        if encoding.deflated:
            compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS
            )
            deflated = compressor.compress(data) + compressor.flush()
            if len(deflated) % 2:
                deflated += b"\x00"
            data = deflated
        return cls([data], ts)


def _without_non_dataset_groups(ds: Dataset) -> Dataset:
    """Return *ds*, or a shallow copy of it without groups 0000 and 0002."""
    bad = [tag for tag in ds.keys() if tag.group in (0x0000, 0x0002)]
    if not bad:
        return ds
    # Dataset.copy() shares the element dict, so build a new Dataset instead.
    bad_set = set(bad)
    trimmed = Dataset({tag: ds.get_item(tag) for tag in ds.keys() if tag not in bad_set})
    implicit_vr, little_endian = ds.original_encoding
    trimmed.set_original_encoding(implicit_vr, little_endian, ds.original_character_set)
    return trimmed


def decode_identifier(data: Buffer | Iterable[Buffer], transfer_syntax: str) -> Dataset:
    """Decode a C-FIND/C-MOVE/C-GET identifier (or any data set) with pydicom.

    *data* is a buffer or an iterable of buffer fragments.  Raises
    :class:`DatasetDecodeError` on malformed input.
    """
    return EncodedDataset(data, transfer_syntax).decode()


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    """Encode the identifier *ds* in *transfer_syntax*; see :meth:`EncodedDataset.from_dataset`.

    Flat identifiers in the little-endian syntaxes take a fast path that does
    not go through pydicom's writer (same bytes, a fraction of the cost).
    """
    ts = transfer_syntax.rstrip("\x00 ")
    if ts in _FAST_SYNTAXES:
        fast = encode_flat(ds, implicit=_FAST_SYNTAXES[ts])
        if fast is not None:
            return fast
    return EncodedDataset.from_dataset(ds, transfer_syntax).tobytes()


# transfer syntax -> implicit VR?, for the fast identifier encoder
_FAST_SYNTAXES = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}

