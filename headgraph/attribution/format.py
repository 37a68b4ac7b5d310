"""The Neuronpedia / circuit-tracer graph JSON, field by field: how a node or link of the
file becomes a row and back, so that an imported graph exports unchanged.

A graph file (circuit-tracer ``frontend/graph_models.py``, Neuronpedia
``graph-schema.json``) is ``{"metadata": {...}, "qParams": {...}, "nodes": [...],
"links": [...]}``. Each node's standard fields get a column (:data:`NODE_FIELDS`); a
field absent from the node sets bit ``i`` of ``absent`` (so absent and ``null`` stay
different), a value the column cannot hold exactly (a string ``feature``, a float
``ctx_idx``) is kept in ``extra`` instead, and so are fields the schema does not name.
An integer ``layer`` (the schema allows string or integer) is stored as text with bit
:data:`LAYER_IS_INT`. Links keep ``source``, ``target``, ``weight``; other link fields
go to the link's ``extra``. Numbers are stored as 8-byte floats, so every value reads
back as the same number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headgraph.attribution.pruning import ERROR, FEATURE, LOGIT, TOKEN
from headgraph.errors import BadInputError


@dataclass(frozen=True)
class Field:
    """A standard node field: its JSON ``key``, its ``column`` and the values it holds."""

    key: str
    column: str
    kind: str  # str | int32 | int64 | num | bool | layer

    def fits(self, value: Any) -> bool:
        """Whether the column holds ``value`` exactly (``None`` always fits: SQL NULL)."""
        if value is None:
            return True
        if self.kind in ("str", "layer") and isinstance(value, str):
            return True
        if self.kind in ("int32", "int64", "layer") and _is_int(value):
            bits = 31 if self.kind in ("int32", "layer") else 63
            return -(1 << bits) <= value < (1 << bits)
        if self.kind == "num":
            return (isinstance(value, float) or (_is_int(value) and abs(value) < 1 << 53))
        if self.kind == "bool":
            return isinstance(value, bool)
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


NODE_FIELDS: tuple[Field, ...] = (
    Field("layer", "layer", "layer"),
    Field("ctx_idx", "ctx_idx", "int32"),
    Field("feature", "feature", "int64"),
    Field("feature_type", "feature_type", "str"),
    Field("jsNodeId", "js_node_id", "str"),
    Field("clerp", "clerp", "str"),
    Field("activation", "activation", "num"),
    Field("influence", "influence", "num"),
    Field("token_prob", "token_prob", "num"),
    Field("is_target_logit", "is_target_logit", "bool"),
)
NODE_COLUMNS = tuple(f.column for f in NODE_FIELDS)
LAYER_IS_INT = 1 << 16
LINK_KEYS = ("source", "target", "weight")


def role_of(feature_type: Any) -> int:
    """A node's role in pruning from its ``feature_type``: ``embedding`` -> token,
    ``logit`` -> logit, anything with ``error`` -> error, the rest -> feature."""
    kind = feature_type.lower() if isinstance(feature_type, str) else ""
    if kind == "embedding":
        return TOKEN
    if kind == "logit":
        return LOGIT
    if "error" in kind:
        return ERROR
    return FEATURE


def encode_node(node: Any, position: int) -> dict[str, Any]:
    """A file node as a row (``node_id``, the :data:`NODE_FIELDS` columns, ``absent``,
    ``extra``); :class:`BadInputError` if it is not an object with a string ``node_id``."""
    if not isinstance(node, Mapping):
        raise BadInputError(f"node {position} is not a JSON object.")
    node_id = node.get("node_id")
    if not isinstance(node_id, str):
        raise BadInputError(f"node {position} has no string node_id ({node_id!r}).")
    row: dict[str, Any] = {"node_id": node_id}
    absent = 0
    extra = {k: v for k, v in node.items() if k != "node_id"}
    for i, f in enumerate(NODE_FIELDS):
        value = extra.get(f.key)
        if f.key not in extra or not f.fits(value):
            absent |= 1 << i
            row[f.column] = None
            continue
        del extra[f.key]
        if f.kind == "layer" and _is_int(value):
            absent |= LAYER_IS_INT
            value = str(value)
        elif f.kind == "num" and value is not None:
            value = float(value)
        row[f.column] = value
    row["absent"] = absent
    row["extra"] = dumps(extra) if extra else None
    for value in row.values():
        if isinstance(value, str):
            check_text(value, f"node {position}")
    return row


def check_text(text: str, where: str) -> str:
    """``text`` if it is storable Unicode; :class:`BadInputError` for a lone surrogate
    (JSON's ``"\\ud800"`` decodes to one; neither database stores it as text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInputError(f"{where} holds a lone surrogate ({text[exc.start]!r}), which is not "
                            "text any database can store; fix the file's escapes.") from None
    return text


def decode_node(row: Mapping[str, Any]) -> dict[str, Any]:
    """The file node back from its row (inverse of :func:`encode_node`)."""
    node: dict[str, Any] = {"node_id": row["node_id"]}
    absent = int(row["absent"])
    for i, f in enumerate(NODE_FIELDS):
        if absent & (1 << i):
            continue
        value = _clean(row[f.column])
        if f.kind == "layer" and value is not None and absent & LAYER_IS_INT:
            value = int(value)
        elif f.kind in ("int32", "int64") and value is not None:
            value = int(value)
        elif f.kind == "bool" and value is not None:
            value = bool(value)
        node[f.key] = value
    if row["extra"]:
        node.update(json.loads(row["extra"]))
    return node


def encode_link_extra(link: Mapping[str, Any]) -> str | None:
    """The link's fields beyond source, target and weight, as JSON (None if none)."""
    extra = {k: v for k, v in link.items() if k not in LINK_KEYS}
    return dumps(extra) if extra else None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None  # PostgreSQL and DuckDB keep NaN, but JSON has no NaN to come from
    return value


def dumps(value: Any) -> str:
    """Compact JSON that keeps non-ASCII text as it is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def number(value: float) -> str:
    """A weight as JSON text: the shortest decimal that reads back as the same double."""
    if math.isfinite(value):
        return repr(float(value))
    return json.dumps(value)  # NaN / Infinity, as Python's json writes them
