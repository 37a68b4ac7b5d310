"""What a file is, from its first bytes, and the circuit it holds.

:func:`sniff` looks at the first 64 KB only and runs nothing:

==============  ========================================================  ===================
kind            how it is recognised                                       what import does
==============  ========================================================  ===================
``pickle``      ``\\x80`` and a protocol byte 2-5 (``pickle.dump``)         refused: pickles
                                                                          can run code. An
                                                                          ACDC ``save_edges``
                                                                          pickle is named,
                                                                          with the command
                                                                          that converts it
``torch``       a zip archive (``torch.save``'s format since PyTorch 1.6)   :mod:`.binary`,
                                                                          ``weights_only``
``safetensors`` an 8-byte header length, then ``{"``                       refused: weights
``gzip``        ``\\x1f\\x8b``                                               refused: unpack it
``binary``      a NUL byte, or not UTF-8                                   refused
``json-object`` first non-blank byte ``{``                                  EAP-IG JSON, or a
                                                                          graph (the CLI)
``json-array``  first non-blank byte ``[``                                  auto-circuit export
``text``        anything else                                              an edge list
==============  ========================================================  ===================
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from headgraph.circuits.acdc_pickle import is_acdc_edges
from headgraph.circuits.formats import (
    CircuitError,
    ParsedCircuit,
    parse_auto_circuit_json,
    parse_eap_json,
    parse_edge_list,
)
from headgraph.errors import BadInputError

HEAD = 1 << 16


def sniff(path: Path) -> str:
    """The kind of file at ``path`` (module table)."""
    with path.open("rb") as f:
        head = f.read(HEAD)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 10:
        (size,) = struct.unpack("<Q", head[:8])
        if 2 <= size <= 100_000_000 and head[8:10] == b'{"':
            return "safetensors"
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not a character cut at the 64 KB mark
            return "binary"
        text = head[:exc.start].decode("utf-8")
    first = text.lstrip(" \t\r\n\ufeff")[:1]
    return {"{": "json-object", "[": "json-array"}.get(first, "text")


def refuse(path: Path, kind: str) -> None:
    """One :class:`BadInputError` line for a file no import reads (pickles, weights,
    compressed and other binary files), saying what to do; nothing for the others."""
    if kind == "pickle":
        head = path.read_bytes() if path.stat().st_size <= 64 << 20 else b""
        if is_acdc_edges(head):
            raise CircuitError(
                f"{path} is ACDC's save_edges pickle; headgraph import never unpickles (a "
                f"pickle can run code). Convert it with `headgraph convert-circuit {path} -o "
                f"{path.with_suffix('.txt').name}` (it reads ACDC's edge tuples and nothing "
                "else), then import the .txt file.")
        raise BadInputError(f"{path} is a Python pickle, which headgraph never loads (it can "
                            "run code). Save the circuit as JSON or text (EAP-IG to_json, an "
                            "edge list) or with torch.save (EAP-IG to_pt, ACDC save_subgraph) "
                            "and import that.")
    if kind == "safetensors":
        raise BadInputError(f"{path} holds model weights (safetensors), not a graph or a "
                            "circuit: store a model with `headgraph ingest DIR`, where DIR "
                            "holds it and its config.json.")
    if kind == "gzip":
        raise BadInputError(f"{path} is gzip-compressed; unpack it (gunzip -k {path}) and "
                            "import the file inside.")
    if kind == "binary":
        raise BadInputError(f"{path} is a binary file, not one headgraph imports: attribution "
                            "graphs (JSON), circuits (EAP-IG JSON or to_pt, ACDC save_subgraph "
                            ".pth, auto-circuit JSON, edge-list text).")


def read_circuit(path: Path, n_layers: int | None) -> ParsedCircuit:
    """The circuit in ``path``, whatever its format (:mod:`headgraph.circuits.formats`)."""
    kind = sniff(path)
    refuse(path, kind)
    if kind == "torch":
        from headgraph.circuits.binary import read_torch_circuit

        return read_torch_circuit(path, n_layers)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not UTF-8 text; save it again as UTF-8.") from None
    if kind == "text":
        return parse_edge_list(text, n_layers)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc}).") from None
    except RecursionError:
        raise BadInputError(f"{path}: JSON nested too deep to be a circuit.") from None
    if isinstance(doc, list):
        return parse_auto_circuit_json(doc, n_layers)
    if not isinstance(doc, dict):
        raise CircuitError(f"{path}: a JSON {type(doc).__name__}, not a circuit.")
    if "graphs" in doc and isinstance(doc["graphs"], list):
        raise BadInputError(f"{path} is circuit-tracer's index of graphs (graph-metadata.json): "
                            "import the graph files it lists instead.")
    return parse_eap_json(doc, n_layers)
