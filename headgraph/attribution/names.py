"""What a graph is stored and served under: its model and slug, checked at import so that
every stored graph can be asked for by URL (``/graphs/{model}/{slug}.json``), and the
model a graph explains when the file names only its transcoders.

Rules
-----
=========  ===========================================================================
slug       1 to :data:`MAX_NAME` characters, printable (no control character, no lone
           surrogate, no blank but the space), no ``/`` or ``\\``, not ``.`` or ``..`` and
           no ``..`` inside; no leading or trailing space
model      the same, except that ``/`` is allowed (Hugging Face names, ``google/gemma-2-2b``;
           it travels percent-encoded in a URL) and no part between ``/`` may be empty
=========  ===========================================================================

The model of a graph
--------------------
``--model`` names it. Without it, ``metadata.scan``: Neuronpedia writes the model there
(``gemma-2-2b``), but circuit-tracer writes the *transcoder set* it used
(``create_graph_files``: ``graph.scan``, which ``ReplacementModel.from_pretrained`` takes
from the transcoders; ``circuit_tracer/utils/caching.py`` sets it to the Hugging Face repo,
``repo@revision`` with a revision), and for a list of transcoders
``"custom-" + str(hash("-".join(list)))``, Python's per-process salted hash. A known set
(:data:`TRANSCODER_SETS`, circuit-tracer's README list) gives its model; another repo or a
``custom-`` scan is refused with what to pass.
"""

from __future__ import annotations

import re

from headgraph.errors import BadInputError

MAX_NAME = 200

TRANSCODER_SETS = {
    "mntss/gemma-scope-transcoders": "gemma-2-2b",
    "mwhanna/gemma-scope-transcoders": "gemma-2-2b",
    "mntss/clt-gemma-2-2b-426k": "gemma-2-2b",
    "mntss/clt-gemma-2-2b-2.5m": "gemma-2-2b",
    "mntss/transcoder-llama-3.2-1b": "llama-3.2-1b",
    "mntss/clt-llama-3.2-1b-524k": "llama-3.2-1b",
    "mntss/clt-131k": "gpt-oss-20b",
}
"""circuit-tracer transcoder sets (lower case, without ``@revision``) and the model each
was trained on (circuit-tracer README, "transcoders available")."""

_CUSTOM = re.compile(r"^custom--?\d+$")


def _problem(value: object, what: str, slash: bool) -> str | None:
    if not isinstance(value, str):
        return f"the {what} must be text, not {type(value).__name__}"
    if not value:
        return f"the {what} is empty"
    if len(value) > MAX_NAME:
        return f"the {what} is {len(value):,} characters long (at most {MAX_NAME})"
    if not value.isprintable():
        return f"the {what} {value[:60]!r} holds a control or unprintable character"
    if value != value.strip():
        return f"the {what} {value[:60]!r} starts or ends with a space"
    if "\\" in value or (not slash and "/" in value):
        return f"the {what} {value[:60]!r} holds a {'backslash' if slash else 'slash'}"
    parts = value.split("/") if slash else [value]
    if any(p in ("", ".", "..") for p in parts) or ".." in value:
        return f"the {what} {value[:60]!r} is or holds '..' or an empty part"
    return None


def check_slug(slug: object, source: str) -> str:
    """``slug`` if it can be stored and served (module table); else one
    :class:`BadInputError` line saying where it came from and what to do."""
    problem = _problem(slug, "slug", slash=False)
    if problem:
        raise BadInputError(f"{problem}: a graph is served at /graphs/{{model}}/{{slug}}.json, "
                            f"so its slug must be a plain name ({source}).")
    assert isinstance(slug, str)
    return slug


def check_model(model: object, source: str) -> str:
    """``model`` if it can name a graph's model (module table); else :class:`BadInputError`."""
    problem = _problem(model, "model name", slash=True)
    if problem:
        raise BadInputError(f"{problem} ({source}); pass --model with the model's name.")
    assert isinstance(model, str)
    return model


def model_of(scan: object, given: str | None) -> tuple[str, str]:
    """The model a graph explains and where the name came from: ``given`` (``--model``),
    else what ``metadata.scan`` names (module doc). :class:`BadInputError` when the scan
    names no model."""
    if given is not None:
        return check_model(given, "--model"), "--model"
    if not isinstance(scan, str) or not scan:
        raise BadInputError("metadata.scan names no model; pass --model with the model the "
                            "graph explains (gemma-2-2b, say).")
    if _CUSTOM.match(scan):
        raise BadInputError(f"metadata.scan is {scan!r}: circuit-tracer writes that for a list "
                            "of transcoders (a per-run hash, not a model). Pass --model with "
                            "the model the graph explains.")
    base = scan.split("@", 1)[0].lower()
    if base in TRANSCODER_SETS:
        return TRANSCODER_SETS[base], f"metadata.scan {scan!r} (a transcoder set)"
    if "/" in scan:
        raise BadInputError(f"metadata.scan is {scan!r}, a repository of transcoders rather "
                            "than a model name; pass --model with the model the graph "
                            "explains (the transcoders' model_name).")
    return check_model(scan, "metadata.scan"), "metadata.scan"
