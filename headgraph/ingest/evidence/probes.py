"""Probes: named, seeded inputs that the model is run on to gather evidence.

A probe is written as ``family(key=value,...)``; several are joined by top-level commas
(``repeat(seq=10),random``), and ``default`` names the standard set. Omitted parameters take
the defaults below; the *canonical* string, every parameter spelled out in a fixed order,
is what each evidence row stores in its ``probe`` column, so a score always says exactly
which inputs produced it. Synthetic probes need no dataset and regenerate bit for bit from
their string (``torch.Generator`` seeded with ``seed``).

==============================  ==========================================================
probe                           one sequence (``B`` = the model's BOS/CLS token, if any)
==============================  ==========================================================
``repeat(seq,batch,seed)``      ``B x x``, ``x`` = ``seq`` random tokens: previous-token and
                                induction heads; its causal metric is the loss on the
                                predictable tokens of the second copy (``x[1:]``)
``duplicate(seq,batch,seed,     ``B`` then ``seq`` tokens drawn from a per-sequence pool of
pool)``                         ``pool`` random tokens, so tokens recur at scattered places
                                (duplicate-token heads, without one long repeated span)
``random(seq,batch,seed)``      ``B`` then ``seq`` random tokens (first-token attention)
``tokens(path)``                the user's token ids: one sequence per line (ids separated
                                by spaces or commas), or a JSON list of lists
``text(path)``                  the user's text, one sequence per line, tokenised with the
                                model's own tokenizer (``B`` prepended if it adds none)
==============================  ==========================================================

``default`` is ``repeat(seq=S,batch=32,seed=0),duplicate(seq=2S,batch=32,seed=0,pool=S),
random(seq=2S,batch=32,seed=0)`` with ``S = min(20, (n_ctx - 1) // 2)``; the canonical names
of file probes carry the file's resolved path and ``sha``, the first 12 hex digits of its
sha256 (given back, ``sha`` is checked against the file).
Random tokens are drawn uniformly from the model's *ordinary* ids (not special tokens).

Everything here checks its input before the model runs: a sequence longer than the model's
``n_ctx``, an id outside its vocabulary, an unknown family or parameter raise
:class:`~headgraph.errors.BadInputError`, so nothing is computed or written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headgraph.errors import BadInputError

#: family -> (parameter, default) in canonical order; ``None`` marks a required parameter.
FAMILIES: dict[str, tuple[tuple[str, int | str | None], ...]] = {
    "repeat": (("seq", 20), ("batch", 32), ("seed", 0)),
    "duplicate": (("seq", 40), ("batch", 32), ("seed", 0), ("pool", 20)),
    "random": (("seq", 40), ("batch", 32), ("seed", 0)),
    "tokens": (("path", None), ("sha", "")),
    "text": (("path", None), ("sha", "")),
}
_TEXT_PARAMS = ("path", "sha")
CAUSAL_FAMILIES = ("repeat", "tokens", "text")  # probes that carry a task metric
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class Vocab:
    """What building a probe needs to know about a model.

    ``ordinary``: ids random tokens are drawn from (no special tokens); ``bos``: the id put
    first in synthetic sequences (BOS for decoders, CLS for BERT), ``None`` for none.
    """

    d_vocab: int
    n_ctx: int
    bos: int | None
    ordinary: torch.Tensor  # (n_ordinary,) int64
    tokenizer: Any = None


@dataclass(frozen=True)
class ProbeBatch:
    """Sequences of one length: ``tokens [n, T]``; ``loss_mask [n, T]`` is True at the
    positions whose next-token prediction the probe's loss counts (None: no loss)."""

    tokens: torch.Tensor
    loss_mask: torch.Tensor | None


@dataclass(frozen=True)
class Probe:
    """A built probe: canonical ``name`` (the ``probe`` column) and its sequences, grouped
    by length (synthetic probes have one group)."""

    name: str
    family: str
    batches: tuple[ProbeBatch, ...]

    @property
    def causal(self) -> bool:
        """Whether causal effects are measured on this probe (it has a task metric)."""
        return self.family in CAUSAL_FAMILIES

    @property
    def n_sequences(self) -> int:
        return sum(int(b.tokens.shape[0]) for b in self.batches)


@dataclass(frozen=True)
class ProbeSpec:
    """A parsed probe before a model is known: family and the parameters the user gave."""

    family: str
    given: tuple[tuple[str, str], ...] = ()


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_probes(text: str) -> tuple[ProbeSpec, ...]:
    """Parse ``--probes`` text into specs (syntax only; values are checked when built).

    Examples
    --------
    >>> [s.family for s in parse_probes("repeat(seq=10),random")]
    ['repeat', 'random']
    """
    if not text or not text.strip():
        raise BadInputError("--probes is empty; use 'default' or e.g. 'repeat(seq=20)'.")
    specs: list[ProbeSpec] = []
    for part in split_top_level(text):
        if part == "default":
            specs.append(ProbeSpec("default"))
            continue
        m = _SPEC.match(part)
        if m is None or m.group(1) not in FAMILIES:
            raise BadInputError(
                f"probe {part!r} is not understood; use 'default' or one of "
                f"{', '.join(f + '(...)' for f in FAMILIES)} (see headgraph.ingest.evidence.probes)."
            )
        family, body = m.group(1), (m.group(2) or "").strip()
        known = [k for k, _ in FAMILIES[family]]
        given: list[tuple[str, str]] = []
        for item in split_top_level(body) if body else []:
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or key not in known or not value:
                raise BadInputError(f"probe {part!r}: bad parameter {item!r}; {family} takes "
                                    f"{', '.join(known)} as key=value.")
            given.append((key, value))
        specs.append(ProbeSpec(family, tuple(given)))
    return tuple(specs)


def _params(spec: ProbeSpec) -> dict[str, int | str]:
    given = dict(spec.given)
    out: dict[str, int | str] = {}
    for key, default in FAMILIES[spec.family]:
        if key not in given:
            if default is None:
                raise BadInputError(f"probe {spec.family}(...) needs {key}=...")
            out[key] = default
        elif key in _TEXT_PARAMS:
            out[key] = given[key]
        else:
            try:
                out[key] = int(given[key])
            except ValueError:
                raise BadInputError(f"probe {spec.family}: {key}={given[key]!r} is not an "
                                    "integer.") from None
    return out


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise BadInputError(message)


def _draw(vocab: Vocab, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, len(vocab.ordinary), shape, generator=gen)
    return vocab.ordinary[idx]


def _with_bos(x: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    if vocab.bos is None:
        return x
    return torch.cat([torch.full((x.shape[0], 1), vocab.bos, dtype=x.dtype), x], dim=1)


def _fit(name: str, length: int, vocab: Vocab) -> None:
    _check(length <= vocab.n_ctx,
           f"probe {name} makes sequences of {length} tokens, but this model reads at most "
           f"{vocab.n_ctx} (n_ctx); use a smaller seq.")


def _repeat(p: dict[str, Any], vocab: Vocab, name: str) -> tuple[ProbeBatch, ...]:
    n, b = p["seq"], p["batch"]
    gen = torch.Generator().manual_seed(p["seed"])
    x = _draw(vocab, (b, n), gen)  # [b, n]
    tokens = _with_bos(torch.cat([x, x], dim=1), vocab)  # [b, off + 2n]
    _fit(name, tokens.shape[1], vocab)
    off = 0 if vocab.bos is None else 1
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, off + n : off + 2 * n - 1] = True  # these predict x[1:] of the second copy
    return (ProbeBatch(tokens, mask),)


def _duplicate(p: dict[str, Any], vocab: Vocab, name: str) -> tuple[ProbeBatch, ...]:
    n, b, pool = p["seq"], p["batch"], p["pool"]
    _check(2 <= pool <= len(vocab.ordinary),
           f"probe {name}: pool must be between 2 and {len(vocab.ordinary)}.")
    gen = torch.Generator().manual_seed(p["seed"])
    pools = _draw(vocab, (b, pool), gen)  # [b, pool]
    picks = torch.randint(0, pool, (b, n), generator=gen)  # [b, n]
    tokens = _with_bos(torch.gather(pools, 1, picks), vocab)
    _fit(name, tokens.shape[1], vocab)
    return (ProbeBatch(tokens, None),)


def _random(p: dict[str, Any], vocab: Vocab, name: str) -> tuple[ProbeBatch, ...]:
    gen = torch.Generator().manual_seed(p["seed"])
    tokens = _with_bos(_draw(vocab, (p["batch"], p["seq"]), gen), vocab)
    _fit(name, tokens.shape[1], vocab)
    return (ProbeBatch(tokens, None),)


def _read_file(path_text: str, family: str) -> tuple[Path, bytes]:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise BadInputError(f"probe {family}(path={path_text}): no such file.")
    return path, path.read_bytes()


def _token_lines(path: Path, data: bytes) -> list[list[int]]:
    text = data.decode("utf-8", errors="strict")
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
            _check(isinstance(rows, list) and all(isinstance(r, list) for r in rows),
                   f"{path}: a JSON token file must hold a list of lists of ids.")
            return [[int(t) for t in r] for r in rows]
        return [[int(t) for t in re.split(r"[\s,]+", line.strip()) if t]
                for line in text.splitlines() if line.strip()]
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: not a token id file ({exc}); write one sequence per "
                            "line as integers separated by spaces or commas.") from None


def _text_lines(data: bytes, vocab: Vocab, name: str) -> list[list[int]]:
    tok = vocab.tokenizer
    _check(tok is not None, f"probe {name}: this model has no tokenizer; tokenise the text "
           "yourself and pass tokens(path=...).")
    seqs = []
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        ids = list(tok(line, add_special_tokens=True)["input_ids"])
        if vocab.bos is not None and (not ids or ids[0] != vocab.bos):
            ids = [vocab.bos, *ids]
        seqs.append(ids)
    return seqs


def _group(seqs: list[list[int]], vocab: Vocab, name: str) -> tuple[ProbeBatch, ...]:
    _check(bool(seqs), f"probe {name}: the file holds no sequences.")
    for i, s in enumerate(seqs):
        _check(len(s) >= 2, f"probe {name}: sequence {i + 1} has {len(s)} token(s); need 2+.")
        _fit(name, len(s), vocab)
        bad = [t for t in s if not 0 <= t < vocab.d_vocab]
        if bad:
            raise BadInputError(f"probe {name}: sequence {i + 1} holds id {bad[0]}, outside "
                                f"this model's vocabulary (0..{vocab.d_vocab - 1}).")
    batches = []
    for length in sorted({len(s) for s in seqs}):
        tokens = torch.tensor([s for s in seqs if len(s) == length], dtype=torch.long)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, -1] = False  # the last token predicts nothing in the file
        batches.append(ProbeBatch(tokens, mask))
    return tuple(batches)


_BUILDERS: dict[str, Callable[[dict[str, Any], Vocab, str], tuple[ProbeBatch, ...]]] = {
    "repeat": _repeat,
    "duplicate": _duplicate,
    "random": _random,
}


def canonical(family: str, params: dict[str, Any]) -> str:
    """``family(k=v,...)`` with every parameter, in the family's order."""
    return f"{family}({','.join(f'{k}={params[k]}' for k, _ in FAMILIES[family])})"


def default_specs(vocab: Vocab) -> tuple[ProbeSpec, ...]:
    """The ``default`` set, sized to the model's context (see the module docstring)."""
    s = max(2, min(20, (vocab.n_ctx - 1) // 2))
    return (
        ProbeSpec("repeat", (("seq", str(s)),)),
        ProbeSpec("duplicate", (("seq", str(2 * s)), ("pool", str(s)))),
        ProbeSpec("random", (("seq", str(2 * s)),)),
    )


def build_probe(spec: ProbeSpec, vocab: Vocab) -> Probe:
    """Generate (or read) one probe's sequences and check them against the model."""
    p = _params(spec)
    if spec.family in _BUILDERS:
        for key in ("seq", "batch"):
            _check(int(p[key]) >= (2 if key == "seq" else 1),
                   f"probe {spec.family}: {key} must be at least {2 if key == 'seq' else 1}.")
        _check(int(p["seed"]) >= 0, f"probe {spec.family}: seed must be non-negative.")
        _check(len(vocab.ordinary) >= 2, "this model has fewer than 2 ordinary token ids.")
        name = canonical(spec.family, p)
        return Probe(name, spec.family, _BUILDERS[spec.family](p, vocab, name))
    path, data = _read_file(str(p["path"]), spec.family)
    sha = hashlib.sha256(data).hexdigest()[:12]
    _check(p["sha"] in ("", sha), f"probe {spec.family}(path={path}): the file's sha256 starts "
           f"{sha}, not {p['sha']}; it changed since that probe was named.")
    name = canonical(spec.family, {"path": path, "sha": sha})
    seqs = _token_lines(path, data) if spec.family == "tokens" else _text_lines(data, vocab, name)
    return Probe(name, spec.family, _group(seqs, vocab, name))


def build_probes(specs: tuple[ProbeSpec, ...], vocab: Vocab) -> tuple[Probe, ...]:
    """Build every probe (``default`` expanded); refuses duplicates of one canonical name."""
    expanded: list[ProbeSpec] = []
    for spec in specs:
        expanded.extend(default_specs(vocab) if spec.family == "default" else (spec,))
    probes: list[Probe] = []
    for spec in expanded:
        probe = build_probe(spec, vocab)
        if any(p.name == probe.name for p in probes):
            raise BadInputError(f"probe {probe.name} is asked for twice.")
        probes.append(probe)
    return tuple(probes)
