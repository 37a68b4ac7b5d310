"""PostgreSQL binary COPY of an Arrow table, built with numpy (no per-row Python).

COPY ... FROM STDIN (FORMAT BINARY) takes a header, then per row a 16-bit field count and
per field a 32-bit length (-1 for NULL) and the value in network byte order, then a -1
trailer.

How it is built: every row is first laid out as one record of a numpy structured dtype in
which each field has a fixed-width slot (its 4-byte length, then its value; a string
slot is as wide as the longest string of that column), and a byte mask of the same shape
says which bytes are real. Filling a record field is one vectorised assignment per column
(fixed-width values are cast to big-endian; strings go through their Arrow dictionary, so
each distinct string is encoded once and rows gather its padded bytes by code), and
``records[mask]`` then squeezes out the padding in a single pass. Rows are done in chunks
of about 16 MB, which keeps memory flat and lets the caller send one chunk while the next
is built. 2.24M edges: ~0.3 s (an earlier per-field scatter took 3.0 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlalchemy import REAL, BigInteger, Boolean, Double, Integer, SmallInteger, String, Table, Text

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
CHUNK_BYTES = 1 << 24

_FIXED = {SmallInteger: ">i2", BigInteger: ">i8", Integer: ">i4", REAL: ">f4", Double: ">f8",
          Boolean: "?"}
_NULL = np.array([-1], ">i4").view("V4")[0]


def _pg_dtype(sql_type) -> str | None:
    for cls, dtype in _FIXED.items():
        if isinstance(sql_type, cls):
            return dtype
    if isinstance(sql_type, (String, Text)):
        return None
    raise TypeError(f"binary COPY does not handle {sql_type!r}")


@dataclass(frozen=True)
class _Fixed:
    """A fixed-width column: big-endian values, and which rows are not NULL (None: all)."""

    values: np.ndarray
    valid: np.ndarray | None

    @property
    def width(self) -> int:
        return self.values.dtype.itemsize


@dataclass(frozen=True)
class _Text:
    """A string column by dictionary: per code (the last one is NULL) its padded slot
    (length + UTF-8 bytes) and the mask of its real bytes."""

    codes: np.ndarray
    slots: np.ndarray  # dtype V{4 + width}
    masks: np.ndarray  # dtype V{4 + width}, bytes 0/1

    @property
    def width(self) -> int:
        return self.slots.dtype.itemsize - 4


def _fixed(col: pa.Array, dtype: str) -> _Fixed:
    nulls = col.null_count
    filler = False if pa.types.is_boolean(col.type) else 0  # a boolean refuses 0
    values = col.fill_null(filler).to_numpy(zero_copy_only=False).astype(dtype)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool) if nulls else None
    return _Fixed(values, valid)


def _text(col: pa.Array) -> _Text:
    enc = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    words = [s.encode() for s in enc.dictionary.to_pylist()]
    width = max((len(w) for w in words), default=0)
    slot = 4 + width
    raw = bytearray(slot * (len(words) + 1))
    mask = bytearray(slot * (len(words) + 1))
    for i, w in enumerate(words):  # once per distinct string, not per row
        raw[i * slot : i * slot + 4 + len(w)] = len(w).to_bytes(4, "big") + w
        mask[i * slot : i * slot + 4 + len(w)] = b"\x01" * (4 + len(w))
    raw[len(words) * slot : len(words) * slot + 4] = b"\xff\xff\xff\xff"  # NULL: length -1
    mask[len(words) * slot : len(words) * slot + 4] = b"\x01" * 4
    codes = enc.indices.fill_null(len(words)).to_numpy(zero_copy_only=False).astype(np.intp)
    return _Text(codes, np.frombuffer(bytes(raw), f"V{slot}"),
                 np.frombuffer(bytes(mask), f"V{slot}"))


def _columns(table: Table, data: pa.Table) -> list[_Fixed | _Text]:
    out: list[_Fixed | _Text] = []
    for name in data.column_names:
        col = data.column(name).combine_chunks()
        dtype = _pg_dtype(table.c[name].type)
        out.append(_text(col) if dtype is None else _fixed(col, dtype))
    return out


def _layout(cols: list[_Fixed | _Text]) -> np.dtype:
    """The padded record: field count, then per column a 4-byte length and its value."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, c in enumerate(cols):
        if isinstance(c, _Fixed):
            fields += [(f"h{i}", ">i4"), (f"v{i}", c.values.dtype.str)]
        else:
            fields.append((f"s{i}", c.slots.dtype.str))
    return np.dtype(fields)


def _as_bytes(dtype: np.dtype) -> np.dtype:
    """The same layout with every field as raw bytes (for the mask)."""
    return np.dtype([(name, f"V{dtype.fields[name][0].itemsize}") for name in dtype.names])


def _chunk(cols: list[_Fixed | _Text], rec_t: np.dtype, mask_t: np.dtype, lo: int, hi: int
           ) -> bytes:
    rec = np.empty(hi - lo, rec_t)
    mask = np.empty(hi - lo, mask_t)
    rec["n"] = len(cols)
    mask["n"] = b"\x01\x01"
    ragged = False
    for i, c in enumerate(cols):
        if isinstance(c, _Text):
            codes = c.codes[lo:hi]
            rec[f"s{i}"] = c.slots[codes]
            mask[f"s{i}"] = c.masks[codes]
            ragged = True
            continue
        ones = np.void(b"\x01" * c.width)
        rec[f"v{i}"] = c.values[lo:hi]
        mask[f"h{i}"] = b"\x01\x01\x01\x01"
        valid = None if c.valid is None else c.valid[lo:hi]
        if valid is None or valid.all():
            rec[f"h{i}"] = c.width
            mask[f"v{i}"] = ones
        else:
            rec[f"h{i}"] = np.where(valid, c.width, -1)
            mask[f"v{i}"] = np.where(valid, ones, np.void(b"\x00" * c.width))
            ragged = True
    if not ragged:
        return rec.tobytes()
    return rec.view(np.uint8)[mask.view(np.bool_)].tobytes()


def binary_copy_chunks(table: Table, data: pa.Table, chunk_bytes: int = CHUNK_BYTES
                       ) -> Iterator[bytes]:
    """The COPY BINARY payload for ``data`` (columns named as ``table``'s), in pieces of
    about ``chunk_bytes``: header and trailer included, ready for ``copy.write``."""
    cols = _columns(table, data)
    rec_t = _layout(cols)
    mask_t = _as_bytes(rec_t)
    yield HEADER
    step = max(1, chunk_bytes // rec_t.itemsize)
    for lo in range(0, data.num_rows, step):
        yield _chunk(cols, rec_t, mask_t, lo, min(data.num_rows, lo + step))
    yield TRAILER


def binary_copy_buffer(table: Table, data: pa.Table) -> bytes:
    """The whole COPY BINARY payload for ``data`` as one ``bytes``."""
    return b"".join(binary_copy_chunks(table, data))
