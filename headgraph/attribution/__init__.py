"""Attribution graphs (circuit-tracer / Neuronpedia graph JSON): the whole feature.

=======================  ==============================================================
module                   what it does
=======================  ==============================================================
:mod:`.format`           the graph JSON field by field: node and link rows and back
:mod:`.jsonstream`       reading a multi-GB JSON document in bounded memory
:mod:`.importer`         ``headgraph import FILE``: one graph, streamed, one transaction
:mod:`.pruning`          circuit-tracer's influence and pruning on sparse links
:mod:`.pruning_height`   its edge step, fast, on links grouped by target height
:mod:`.default_view`     the default pruned view stored at import
:mod:`.graphs`           the read side: stored graphs, their nodes, view records
:mod:`.pruned`           pruned views (cached per process)
:mod:`.neighbourhood`    a node's upstream and downstream links
:mod:`.export`           graphs and views back as Neuronpedia JSON
:mod:`.types`            GraphQL types and root fields (``attributionGraph(s)``)
:mod:`.routes`           ``GET /graphs/{slug}.json``
:mod:`.transfer`         what ``headgraph copy`` carries of graphs
:mod:`.check`            what ``headgraph check`` verifies of graphs
:mod:`.synth`            synthetic graphs in circuit-tracer's shape (tests, benchmarks)
=======================  ==============================================================

Its tables are declared with the others in :mod:`headgraph.schema.tables` (the database
file is one public interface with one schema version). It depends on the core
(``schema``, ``queries``, ``api``) and never the other way: :mod:`headgraph.server`,
:mod:`headgraph.maintenance` and the CLI bring it in.
"""
