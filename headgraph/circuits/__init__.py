"""Head-level circuits found by discovery tools (ACDC, auto-circuit, EAP-IG): their files.

==================  ===================================================================
module              what it does
==================  ===================================================================
:mod:`.names`       the tools' edge names, parsed into headgraph's nodes and kinds
:mod:`.formats`     the tools' text and JSON files, parsed into headgraph's edges
:mod:`.files`       what a file is (from its first bytes) and the circuit it holds
:mod:`.binary`      ``torch.save`` files, read with ``weights_only=True`` (torch here only)
:mod:`.acdc_pickle` ACDC's ``save_edges`` pickle, read without running anything
                    (``headgraph convert-circuit``)
:mod:`.importer`    ``headgraph import FILE --model M``: a circuit as evidence rows on
                    the model's own edges, one transaction
:mod:`.export`      a stored circuit written back in the format it came in
==================  ===================================================================

A stored circuit is evidence on the composition graph's own edges (a ``circuits`` row and
``edge_scores`` rows), so reading it is core: :mod:`headgraph.queries.circuits` lists
circuits, :mod:`headgraph.queries.gaps` sets them against the weights
(``Model.evidenceGaps``). This package holds what is specific to the tools' files.
"""
