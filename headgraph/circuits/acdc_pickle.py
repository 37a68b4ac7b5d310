"""ACDC's ``save_edges`` pickle as an edge list, read without running anything.

ACDC saves its edges with ``pickle.dump`` (``acdc/TLACDCExperiment.py``, ``save_edges``): a
list of ``((receiver, TorchIndex, sender, TorchIndex), effect_size)`` where ``TorchIndex``
is ``acdc.TLACDCEdge.TorchIndex`` (``as_index``, a tuple of slices and ints, and
``hashable_tuple``) and ``effect_size`` a float, or None for an edge not yet tested
(``edges.pkl`` after the first step). ``acdc/main.py`` writes it as ``edges.pkl``,
``another_final_edges.pkl`` and, despite the name, ``edges.pth``.

A plain ``pickle.load`` would need ACDC installed and, on a file from anyone else, could run
any code. :class:`EdgeUnpickler` is Python's documented way to restrict it ("Restricting
Globals"): the only globals it resolves are ``builtins.slice`` and ACDC's ``TorchIndex``,
which becomes :class:`TorchIndex` here, a class that only holds the data pickled into it.
Anything else in the file (a function, a class, a module) stops the load with
``BAD_CIRCUIT``. ``headgraph import`` never unpickles: it refuses pickles and names
``headgraph convert-circuit``, which writes what this module reads as ACDC's printed names
(``TLACDCInterpNode.__str__``: ``name`` + ``TorchIndex.__repr__``) in the edge-list format.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

from headgraph.circuits.formats import CircuitError
from headgraph.circuits.names import acdc_index

ALLOWED = {("builtins", "slice"): slice}


class TorchIndex:
    """What ACDC's ``TorchIndex`` pickles: ``hashable_tuple`` (``(None, None, 3)``) and
    ``as_index``. Holds data only; has no behaviour a pickle could call."""

    hashable_tuple: tuple = ()
    as_index: tuple = ()


class EdgeUnpickler(pickle.Unpickler):
    """An unpickler that builds nothing but containers, numbers, strings, slices and
    :class:`TorchIndex` (module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("acdc.TLACDCEdge", "TorchIndex"):
            return TorchIndex
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise CircuitError(f"the pickle asks for {module}.{name}, which an ACDC edge list never "
                           "holds: headgraph will not load it.")


def is_acdc_edges(data: bytes) -> bool:
    """Whether the pickle ``data`` names ACDC's ``TorchIndex`` (read by walking its opcodes,
    which runs nothing)."""
    try:
        strings = [arg for op, arg, _ in pickletools.genops(data)
                   if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "GLOBAL")
                   and isinstance(arg, str)]
    except Exception:  # noqa: BLE001 - not a whole pickle: not ACDC's
        return False
    return "acdc.TLACDCEdge" in strings or any("acdc.TLACDCEdge" in s for s in strings)


def read_edges(path: Path) -> list[tuple[str, str, float | None]]:
    """``(sender, receiver, effect_size)`` of every edge in an ACDC ``save_edges`` pickle, in
    ACDC's printed names; :class:`CircuitError` for anything else."""
    try:
        data = EdgeUnpickler(io.BytesIO(path.read_bytes())).load()
    except CircuitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign pickle
        raise CircuitError(f"{path}: not an ACDC save_edges pickle ({type(exc).__name__}: "
                           f"{str(exc)[:120]}).") from None
    out = []
    for item in data if isinstance(data, list) else [None]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple)
                and len(item[0]) == 4):
            raise CircuitError(f"{path}: an ACDC save_edges pickle is a list of ((receiver, "
                               f"index, sender, index), effect_size); found {str(item)[:80]}.")
        (receiver, r_index, sender, s_index), effect = item
        if not (isinstance(receiver, str) and isinstance(sender, str)
                and isinstance(r_index, TorchIndex) and isinstance(s_index, TorchIndex)):
            raise CircuitError(f"{path}: an edge of this pickle is not ACDC's "
                               f"(receiver, TorchIndex, sender, TorchIndex): {str(item)[:80]}.")
        if effect is not None and (isinstance(effect, bool)
                                   or not isinstance(effect, int | float)):
            raise CircuitError(f"{path}: effect size {effect!r} is not a number.")
        out.append((f"{sender}{acdc_index(s_index.hashable_tuple)}",
                    f"{receiver}{acdc_index(r_index.hashable_tuple)}",
                    None if effect is None else float(effect)))
    return out


def convert(path: Path) -> str:
    """The edge-list text of an ACDC ``save_edges`` pickle: a comment naming the file, then
    ``SENDER->RECEIVER EFFECT`` a line (no effect for an untested edge)."""
    edges = read_edges(path)
    lines = [f"# ACDC save_edges pickle {path.name}: {len(edges)} edges, read by headgraph "
             "convert-circuit"]
    for sender, receiver, effect in edges:
        name = f"{sender}->{receiver}"
        lines.append(name if effect is None else f"{name} {effect!r}")
    return "\n".join(lines) + "\n"
