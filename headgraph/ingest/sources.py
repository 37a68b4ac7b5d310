"""Turn a SOURCE argument into a weight reader and default labels.

=========================  ===============================================================
SOURCE                     meaning
=========================  ===============================================================
``toy`` / ``toy@STEP``     the shipped toy model (final checkpoint / a training step)
``random:SHAPE[,seed=N]``  random weights: ``gpt2-small``, ``gpt2-xl``, ``L4H8D256``...
a directory                a local Hugging Face checkpoint (safetensors)
``model.gguf``             a GGUF file (llama.cpp's format), dequantized (``headgraph[gguf]``)
``org/name``               a Hugging Face hub name (needs internet; cached locally)
=========================  ===============================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from headgraph.errors import SourceError
from headgraph.ingest.reader import WeightReader

_STEP_PATTERNS = (  # a name's trailing step: HF Trainer, Pythia/OLMo, Megatron, Lightning
    re.compile(r"(?:checkpoint|ckpt)[-_]?(\d+)$"),
    re.compile(r"(?:^|[^A-Za-z])step[-_=]?(\d+)$"),
    re.compile(r"(?:^|[^A-Za-z])iter[-_]?(\d+)$"),
)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class SourceDefaults:
    """Labels a source suggests when the user gives none."""

    name: str
    family: str | None = None
    step: int | None = None


def step_from_name(name: str) -> int | None:
    """The training step a directory name gives, or ``None``.

    ``checkpoint-1500``, ``ckpt_1500``, ``step1500``, ``step-01500``, ``global_step1500``,
    ``step=1500`` (Lightning), ``iter_0001500`` (Megatron) -> 1500; the number must end the
    name (``checkpoint-1500-merged`` gives ``None``).

    Examples
    --------
    >>> step_from_name("checkpoint-1500"), step_from_name("global_step200")
    (1500, 200)
    >>> step_from_name("iter_0001500"), step_from_name("twitter5")
    (1500, None)
    """
    for pattern in _STEP_PATTERNS:
        if m := pattern.search(name):
            return int(m.group(1))
    return None


def describe(source: str) -> SourceDefaults:
    """Default name, family and step for a source string (no loading)."""
    if source == "toy" or source.startswith("toy@"):
        from headgraph.toy import checkpoint_steps

        steps = checkpoint_steps()
        step = int(source[4:]) if source.startswith("toy@") else steps[-1]
        return SourceDefaults(name="toy" if source == "toy" else f"toy@{step}", family="toy",
                              step=step)
    if source.startswith("random:"):
        return SourceDefaults(name=source)
    path = Path(source)
    if path.exists():
        name = path.resolve().name
        return SourceDefaults(name=name, step=step_from_name(name))
    return SourceDefaults(name=source)


def _toy_dir(source: str) -> Path:
    from headgraph.toy import checkpoint_dir, checkpoint_steps

    if source == "toy":
        return checkpoint_dir()
    text = source[4:]
    if not text.isdigit() or int(text) not in checkpoint_steps():
        raise SourceError(
            f"{source}: the toy model has checkpoints at steps "
            f"{', '.join(map(str, checkpoint_steps()))}; use toy@STEP with one of them."
        )
    return checkpoint_dir(int(text))


def _hub_dir(name: str) -> Path:
    """Download (or find cached) config, safetensors and tokenizer files of a hub model."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline:
        raise SourceError(
            f"{name}: there is no local directory of that name, and as a Hugging Face hub name "
            "it cannot be downloaded because HF_HUB_OFFLINE is set (no internet). Download it "
            f"where there is internet (`huggingface-cli download {name}`) and pass the local "
            "directory instead."
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"],
        )
    except Exception as exc:
        raise SourceError(
            f"{name}: could not be downloaded from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). Without internet, download it elsewhere and pass the local directory."
        ) from None
    return Path(folder)


def open_source(source: str, *, allow_pickle: bool = False) -> WeightReader:
    """A :class:`WeightReader` for ``source`` (see the table above)."""
    if source.startswith("random:"):
        from headgraph.ingest.gpt2_stream import PRESETS as GPT2_PRESETS
        from headgraph.ingest.gpt2_stream import random_gpt2_reader
        from headgraph.ingest.random_hf import FAMILIES, PRESETS, random_family_reader

        text = source[len("random:") :]
        head = text.split(",", 1)[0]
        if head in FAMILIES or (head in PRESETS and head not in GPT2_PRESETS):
            return random_family_reader(text)
        return random_gpt2_reader(text)
    from headgraph.ingest.bridge_reader import read_directory

    if source == "toy" or source.startswith("toy@"):
        return read_directory(_toy_dir(source), source)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        from headgraph.ingest.gguf_reader import read_gguf

        return read_gguf(path, str(path.resolve()))
    if path.exists():
        return read_directory(path, str(path.resolve()), allow_pickle=allow_pickle)
    if path.suffix.lower() == ".gguf":
        raise SourceError(f"{source}: no such GGUF file.")
    if _HUB_NAME.match(source) and not source.startswith((".", "/", "~")):
        return read_directory(_hub_dir(source), source, allow_pickle=allow_pickle)
    raise SourceError(
        f"{source}: no such file or directory. SOURCE is a local Hugging Face model "
        "directory, a .gguf file, a hub name like 'gpt2' or 'org/name', 'toy', or "
        "'random:SHAPE'."
    )
