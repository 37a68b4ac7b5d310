"""Lists of records that turn into DataFrames with every field.

Every list the Python API returns is a :class:`Rows`: a plain ``list`` of frozen records
(``EdgeRow``, ``NodeRow``, ``ScoreRow``...), so it iterates, indexes and compares as a list
does, plus :meth:`Rows.to_pandas` (every field of the records, ``z`` included; nested
records flattened as ``edge.source``...) and an HTML view in notebooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


def flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    """A record as one flat dict: dataclass fields (nested records as ``name.field``),
    tuples of names joined as ``"L0H1,L1H2"``."""
    if not dataclasses.is_dataclass(record):
        return {prefix.rstrip(".") or "value": record}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            out[key] = ",".join(value)
        else:
            out[key] = value
    return out


class Rows(list[T]):
    """A list of records with :meth:`to_pandas`."""

    def __init__(self, items: Iterable[T] = ()) -> None:
        super().__init__(items)

    def to_pandas(self) -> pd.DataFrame:
        """One row per record, one column per field (nested records flattened)."""
        import pandas as pd

        return pd.DataFrame([flatten(r) for r in self])

    def _repr_html_(self) -> str:  # a notebook shows the table
        return self.to_pandas()._repr_html_()
