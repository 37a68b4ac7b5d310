"""Arrow arrays built straight from numpy buffers and Python strings.

``pyarrow.array()`` asks whether its argument is a pandas object, and so imports pandas the
first time it runs: 0.2-0.9 s of an ingest that otherwise never needs pandas (measured on
the development machine: a whole ``random:gpt2-small`` ingest is a few seconds). The
writers build their columns here instead, from buffers, which never touches pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_TYPES = {np.dtype(np.int8): pa.int8(), np.dtype(np.int16): pa.int16(),
          np.dtype(np.int32): pa.int32(), np.dtype(np.int64): pa.int64(),
          np.dtype(np.float32): pa.float32(), np.dtype(np.float64): pa.float64()}


def numeric(values: np.ndarray, dtype: np.dtype | type | None = None,
            null: np.ndarray | None = None) -> pa.Array:
    """A numeric Arrow array over ``values`` (cast to ``dtype``), null where ``null``."""
    data = np.ascontiguousarray(values, dtype=dtype)
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~np.asarray(null, bool), bitorder="little"))
    return pa.Array.from_buffers(_TYPES[data.dtype], len(data), [validity, pa.py_buffer(data)],
                                 null_count=-1 if validity is not None else 0)


def strings(values: Sequence[str]) -> pa.Array:
    """A UTF-8 Arrow array of ``values``."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def constant(value: int, n: int, dtype: type = np.int32) -> pa.Array:
    """``n`` copies of ``value``."""
    return numeric(np.full(n, value, dtype))
