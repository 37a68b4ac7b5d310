"""PostgreSQL binary COPY of an Arrow table, built with numpy (no per-row Python).

COPY ... FROM STDIN (FORMAT BINARY) takes a header, then per row a 16-bit field count and
per field a 32-bit length (-1 for NULL) and the value in network byte order, then a -1
trailer. Fixed-width columns are scattered into one byte buffer at computed offsets;
string columns (node names, kinds: a few distinct values) go through their dictionary, so
each distinct string is encoded once. ~2M rows/s here (STACK-NOTES: binary COPY from a
numpy-built buffer was the fastest load measured).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sqlalchemy import REAL, BigInteger, Boolean, Double, Integer, SmallInteger, String, Table, Text

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

_FIXED = {SmallInteger: ">i2", BigInteger: ">i8", Integer: ">i4", REAL: ">f4", Double: ">f8",
          Boolean: "?"}


def _pg_dtype(sql_type) -> str | None:
    for cls, dtype in _FIXED.items():
        if isinstance(sql_type, cls):
            return dtype
    if isinstance(sql_type, (String, Text)):
        return None
    raise TypeError(f"binary COPY does not handle {sql_type!r}")


def _scatter(buf: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """``buf[at[i] : at[i] + w] = values[i]`` for a ``[n, w]`` byte matrix."""
    buf[at[:, None] + np.arange(values.shape[1])] = values


def binary_copy_buffer(table: Table, data: pa.Table) -> bytes:
    """The COPY BINARY payload for ``data`` (columns named as ``table``'s)."""
    n = data.num_rows
    fields = []  # (field byte length per row incl. 4-byte length, writer)
    for name in data.column_names:
        col = data.column(name).combine_chunks()
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        dtype = _pg_dtype(table.c[name].type)
        if dtype is not None:
            width = np.dtype(dtype).itemsize
            values = col.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
            raw = values.view(np.uint8).reshape(n, width)
            lengths = np.where(valid, width, 0).astype(np.int64)
            fields.append((lengths, ("fixed", raw, valid)))
        else:
            enc = col.dictionary_encode() if not pa.types.is_dictionary(col.type) else col
            words = [s.encode() for s in enc.dictionary.to_pylist()]
            word_len = np.asarray([len(w) for w in words] or [0], np.int64)
            starts = np.zeros(len(word_len) + 1, np.int64)
            starts[1:] = np.cumsum(word_len)
            blob = np.frombuffer(b"".join(words) or b"\x00", np.uint8)
            codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            lengths = np.where(valid, word_len[codes], 0)
            fields.append((lengths, ("text", blob, starts, codes, valid)))
    row_len = 2 + sum(4 + f[0] for f in fields)
    row_start = np.zeros(n + 1, np.int64)
    row_start[1:] = np.cumsum(row_len)
    buf = np.empty(len(HEADER) + int(row_start[-1]) + len(TRAILER), np.uint8)
    buf[: len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    base = row_start[:-1] + len(HEADER)
    count = np.frombuffer(np.array([len(fields)], ">i2").tobytes(), np.uint8)
    _scatter(buf, base, np.broadcast_to(count, (n, 2)))
    pos = base + 2
    for lengths, spec in fields:
        valid = spec[-1]
        header = np.where(valid, lengths, -1).astype(">i4").view(np.uint8).reshape(n, 4)
        _scatter(buf, pos, header)
        if spec[0] == "fixed":
            raw = spec[1]
            _scatter(buf, pos[valid] + 4, raw[valid])
        else:
            _, blob, starts, codes, _ = spec
            total = int(lengths.sum())
            if total:
                rows = np.repeat(np.arange(n), lengths)
                first = np.zeros(n, np.int64)
                first[1:] = np.cumsum(lengths)[:-1]
                within = np.arange(total) - np.repeat(first, lengths)
                buf[pos[rows] + 4 + within] = blob[starts[codes[rows]] + within]
        pos = pos + 4 + lengths
    buf[-2:] = np.frombuffer(TRAILER, np.uint8)
    return buf.tobytes()
