"""Evidence from running the model: probes, role scores, ablations, path patching.

=================  ====================================================================
module             what it does
=================  ====================================================================
:mod:`.probes`     named, seeded inputs (``repeat(seq=20)``, ``default``...)
:mod:`.runnable`   a model that can be run: bridge, tokenizer, vocabulary
:mod:`.roles`      attention-pattern role scores (TransformerLens ``head_detector``)
:mod:`.causal`     ablation and path-patching effects, batched
:mod:`.collect`    all of a probe set's evidence for one model, and its rows
:mod:`.reprobe`    ``headgraph probe``: evidence for a model already stored
=================  ====================================================================
"""
