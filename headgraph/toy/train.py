"""Train the shipped toy model: a 2-layer, 4-head, attention-only GPT-2 that learns induction.

Why this exists: headgraph's tests and demos need a real model whose circuit is known in
advance. A previous-token head in layer 0 and induction heads in layer 1 that read it through
K-composition (Olsson et al. 2022) are the best-understood circuit there is, and they form in
minutes on a CPU when a model is trained on random tokens with repeated spans.

The model is a stock Hugging Face ``GPT2LMHeadModel``, so every checkpoint is an ordinary HF
directory (config, safetensors, tokenizer) that TransformerLens and headgraph load offline.
It is made attention-only by zeroing both MLP layers and freezing them: a GELU of zero is zero,
so the MLPs write nothing and stay exactly zero in every checkpoint.

Run (about 1.5 minutes on one CPU thread; reruns give byte-identical weights)::

    python -m headgraph.toy.train --out headgraph/toy/checkpoints
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

BOS = "<|endoftext|>"  # the only special token: BOS, EOS, pad and unk at once
ROLE_THRESHOLD = 0.5  # a head "is" a previous-token / induction head above this score


@dataclass(frozen=True)
class ToyConfig:
    """Every knob of one training run; written to the manifest so a run can be repeated."""

    seed: int = 0
    steps: int = 5000
    n_tokens: int = 128  # ordinary tokens t0..t127; BOS is one more, so vocab = 129
    n_ctx: int = 64  # sequence length, BOS included
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4  # d_head = 16
    n_inner: int = 16  # MLP width; the MLPs are zero and frozen, small keeps files small
    init_std: float = 0.1  # initial weight std; GPT-2's 0.02 suits d_model 768 and stalls here
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_span: int = 8  # shortest repeated span
    max_span: int = 31  # longest repeated span: two copies of it fill the row after BOS
    eval_every: int = 100
    threads: int = 1  # fixed so that float reductions, and so the weights, repeat exactly

    def __post_init__(self) -> None:
        """Reject settings the model or the data layout cannot honour, saying what to change."""
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        if not 2 <= self.min_span <= self.max_span:
            raise ValueError(
                f"need 2 <= min_span <= max_span, got {self.min_span} and {self.max_span}"
            )
        if 1 + 2 * self.max_span > self.n_ctx:
            raise ValueError(
                f"two copies of a max_span={self.max_span} span and BOS do not fit in "
                f"n_ctx={self.n_ctx}; "
                f"use max_span <= {(self.n_ctx - 1) // 2}"
            )
        if self.threads < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("threads, batch_size and eval_every must be positive")


# Steps saved by default, chosen from a full run of the default config so they span the
# induction phase change. Loss on repeated tokens drifts from 4.85 (chance, ln 128) to 4.2 by
# step 1000 (a one-layer "tokens seen before are likelier" guess), then falls from 3.84 at
# 1400 through 2.50 (1600) and 0.93 (1800) to 0.56 at 2000, and creeps to ~0.37 by 5000.
DEFAULT_SAVE_STEPS: tuple[int, ...] = (0, 1000, 1400, 1600, 1800, 2000, 3000, 5000)


def build_model(cfg: ToyConfig) -> GPT2LMHeadModel:
    """A GPT-2 with cfg's sizes, no dropout, tied embeddings, and zero, frozen MLPs."""
    config = GPT2Config(
        vocab_size=cfg.n_tokens + 1,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.n_inner,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=cfg.n_tokens,
        eos_token_id=cfg.n_tokens,  # no pad_token_id: nothing is padded, and HF would warn on BOS
        initializer_range=cfg.init_std,
        tie_word_embeddings=True,
        use_cache=False,
    )
    # eager attention: deterministic on CPU, and it can return attention patterns
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for block in model.transformer.h:
            for layer in (block.mlp.c_fc, block.mlp.c_proj):
                layer.weight.zero_()
                layer.bias.zero_()
                layer.weight.requires_grad_(False)
                layer.bias.requires_grad_(False)
    return model


def build_tokenizer(cfg: ToyConfig) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: "t0".."t{n-1}" are ids 0..n-1, BOS is id n; splits on spaces."""
    vocab = {f"t{i}": i for i in range(cfg.n_tokens)}
    vocab[BOS] = cfg.n_tokens
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=BOS))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=BOS,
        pad_token=BOS,
        model_max_length=cfg.n_ctx,
    )


def make_batch(cfg: ToyConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences, each holding one span of random tokens that repeats later.

    Layout of one row: BOS, random tokens, span, random tokens, the same span, random tokens.
    The span length is uniform in [min_span, max_span]; two uniform cut points split the free
    positions into the stretches before, between and after the two copies.

    Returns ``tokens [batch, n_ctx]`` and ``repeated [batch, n_ctx]``, True on the second and
    later tokens of the second copy: the tokens that only an induction head can predict.
    """
    b, t = cfg.batch_size, cfg.n_ctx
    tokens = torch.randint(0, cfg.n_tokens, (b, t), generator=gen)  # [b, t]
    tokens[:, 0] = cfg.n_tokens  # BOS
    repeated = torch.zeros(b, t, dtype=torch.bool)  # [b, t]
    span = torch.randint(cfg.min_span, cfg.max_span + 1, (b,), generator=gen)  # [b]
    cuts = torch.rand(b, 2, generator=gen)  # [b, 2]: the two cut points, as fractions
    for row in range(b):
        n = int(span[row])
        free = (t - 1) - 2 * n  # positions after BOS outside the two copies
        a, c = sorted(int(f * (free + 1)) for f in cuts[row].tolist())  # 0 <= a <= c <= free
        first = 1 + a
        second = first + n + (c - a)
        tokens[row, second : second + n] = tokens[row, first : first + n]
        repeated[row, second + 1 : second + n] = True
    return tokens, repeated


def split_losses(
    logits: torch.Tensor, tokens: torch.Tensor, repeated: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    """Next-token cross-entropy: (mean over all predictions, mean on repeated, mean on the rest).

    ``logits [b, t, vocab]`` predicts ``tokens[:, 1:]``; the repeated/rest split is on the
    predicted token.
    """
    vocab = logits.shape[-1]
    per_tok = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="none"
    )  # [b * (t-1)]
    mask = repeated[:, 1:].reshape(-1)  # [b * (t-1)]
    return per_tok.mean(), per_tok[mask].mean().item(), per_tok[~mask].mean().item()


@torch.no_grad()
def head_scores(
    model: GPT2LMHeadModel, cfg: ToyConfig, seed: int, n_seqs: int = 64
) -> dict[str, dict[str, float]]:
    """Previous-token and induction scores of every head, measured on BOS + x + x.

    ``x`` is ``(n_ctx - 1) // 2`` random tokens. ``previous_token``: mean attention from
    position i to i-1, over i >= 2. ``previous_token_first_copy``: the same over the first
    copy only, the positions whose previous token an induction head's keys need.
    ``induction``: mean attention from each token of the second copy to the token just after
    that token's first occurrence (position i - len(x) + 1).
    """
    gen = torch.Generator().manual_seed(seed)
    n = (cfg.n_ctx - 1) // 2
    x = torch.randint(0, cfg.n_tokens, (n_seqs, n), generator=gen)  # [s, n]
    bos = torch.full((n_seqs, 1), cfg.n_tokens)
    tokens = torch.cat([bos, x, x], dim=1)  # [s, 1 + 2n]
    out = model(tokens, output_attentions=True)
    t = tokens.shape[1]
    prev_q = torch.arange(2, t)
    first_q = torch.arange(2, n + 1)  # the first copy, less its first token
    ind_q = torch.arange(n + 1, t)  # the second copy
    scores: dict[str, dict[str, float]] = {}
    for layer, pattern in enumerate(out.attentions):  # pattern [s, heads, t_q, t_k]
        prev = pattern[:, :, prev_q, prev_q - 1].mean(dim=(0, 2))  # [heads]
        prev_first = pattern[:, :, first_q, first_q - 1].mean(dim=(0, 2))  # [heads]
        ind = pattern[:, :, ind_q, ind_q - n + 1].mean(dim=(0, 2))  # [heads]
        for h in range(pattern.shape[1]):
            scores[f"L{layer}H{h}"] = {
                "previous_token": round(prev[h].item(), 4),
                "previous_token_first_copy": round(prev_first[h].item(), 4),
                "induction": round(ind[h].item(), 4),
            }
    return scores


def save_checkpoint(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> str:
    """Write an offline-loadable HF checkpoint (config, safetensors, tokenizer).

    Returns the sha256 of model.safetensors, recorded in the manifest so that a rerun can be
    checked against the shipped weights.
    """
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / "generation_config.json").unlink(missing_ok=True)  # not a generation model
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def lr_at(step: int, cfg: ToyConfig) -> float:
    """Linear warm-up then cosine decay to a tenth of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def train(cfg: ToyConfig, out: Path, save_steps: tuple[int, ...], command: str) -> dict[str, Any]:
    """Train; save checkpoints at ``save_steps`` and the final step, and ``out/manifest.json``.

    A checkpoint's step is the number of optimiser updates done. Old ``step-*`` directories
    in ``out`` are removed first, so the directory holds exactly this run's checkpoints.
    """
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in the log
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    model = build_model(cfg)
    tokenizer = build_tokenizer(cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]  # embeddings and attention matrices
    no_decay = [p for p in trainable if p.dim() < 2]  # biases and LayerNorms
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    # a fixed held-out batch, so losses at different steps are comparable
    eval_tokens, eval_repeated = make_batch(cfg, torch.Generator().manual_seed(cfg.seed + 1))

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("step-*"):
        if old.is_dir():
            shutil.rmtree(old)
    checkpoints: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    started = time.perf_counter()

    def evaluate(step: int) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        """Losses on the held-out batch, and every head's role scores."""
        model.eval()
        with torch.no_grad():
            logits = model(eval_tokens).logits  # [b, t, vocab]
            total, rep, rest = split_losses(logits, eval_tokens, eval_repeated)
        heads = head_scores(model, cfg, cfg.seed + 2)
        model.train()
        prev = max(heads, key=lambda h: heads[h]["previous_token"])
        ind = max(heads, key=lambda h: heads[h]["induction"])
        row: dict[str, Any] = {
            "step": step,
            "loss": round(total.item(), 4),
            "loss_repeated": round(rep, 4),
            "loss_rest": round(rest, 4),
            "best_previous_token": [prev, heads[prev]["previous_token"]],
            "best_induction": [ind, heads[ind]["induction"]],
        }
        print(
            f"step {step:5d}  loss {row['loss']:.3f}  repeated {rep:.3f}  rest {rest:.3f}"
            f"  prev {prev} {heads[prev]['previous_token']:.2f}"
            f"  ind {ind} {heads[ind]['induction']:.2f}"
            f"  ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
        return row, heads

    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step in save_steps or step == cfg.steps:
            row, heads = evaluate(step)
            history.append(row)
            if step in save_steps or step == cfg.steps:
                path = out / f"step-{step:05d}"
                digest = save_checkpoint(model, tokenizer, path)
                checkpoints.append({**row, "dir": path.name, "sha256": digest, "heads": heads})
        if step == cfg.steps:
            break
        tokens, _ = make_batch(cfg, gen)  # [b, t]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        logits = model(tokens).logits  # [b, t, vocab]
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    final = checkpoints[-1]["heads"]
    roles = {  # heads whose score on the final checkpoint passes the threshold, best first
        role: sorted(
            (h for h, s in final.items() if s[role] > ROLE_THRESHOLD), key=lambda h: -final[h][role]
        )
        for role in ("previous_token", "induction")
    }
    n = (cfg.n_ctx - 1) // 2
    manifest = {
        "description": "2-layer, 4-head attention-only GPT-2 (MLPs zero and frozen) trained on "
        "random tokens with one repeated span per sequence; see headgraph/toy/train.py",
        "command": command,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "steps": [c["step"] for c in checkpoints],
        "final_step": checkpoints[-1]["step"],
        "final_loss": {k: history[-1][k] for k in ("loss", "loss_repeated", "loss_rest")},
        "heads": {
            **roles,
            "threshold": ROLE_THRESHOLD,
            "probe": f"BOS + x + x, x = {n} random tokens, 64 sequences (seed {cfg.seed + 2}); "
            "previous_token = mean attention to i-1, induction = mean attention from the second "
            "copy to the token after the first occurrence",
            "scores": final,
        },
        "loss_note": "loss_repeated is on the 2nd..last tokens of the repeated span (predictable "
        "only by induction), loss_rest on every other token (chance is ln(n_tokens))",
        "checkpoints": checkpoints,
        "history": history,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"done in {time.perf_counter() - started:.0f}s; heads {roles}", flush=True)
    return manifest


def parse_steps(text: str) -> tuple[int, ...]:
    """Parse "0,100,200" into (0, 100, 200); raise ValueError on anything else."""
    try:
        steps = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise ValueError(f"--save-steps must be comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in steps):
        raise ValueError(f"--save-steps must be non-negative, got {text!r}")
    return steps


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m headgraph.toy.train --out DIR [--steps N] [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for step-NNNNN checkpoints and manifest.json",
    )
    parser.add_argument(
        "--steps", type=int, default=ToyConfig.steps, help="optimiser steps (default %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=ToyConfig.seed,
        help="seed for weights and data (default %(default)s)",
    )
    parser.add_argument(
        "--save-steps",
        default=",".join(map(str, DEFAULT_SAVE_STEPS)),
        help="comma-separated steps to save; the final step is always saved (default %(default)s)",
    )
    args = parser.parse_args(argv)
    cfg = ToyConfig(seed=args.seed, steps=args.steps)  # raises ValueError on bad values
    save_steps = tuple(s for s in parse_steps(args.save_steps) if s <= args.steps)
    command = "python -m headgraph.toy.train " + " ".join(sys.argv[1:] if argv is None else argv)
    train(cfg, args.out, save_steps, command)


if __name__ == "__main__":
    main()
