"""Attribution graphs (circuit-tracer / Neuronpedia graph JSON): the whole feature.

=======================  ==============================================================
module                   what it does
=======================  ==============================================================
:mod:`.format`           the graph JSON field by field: node and link rows and back
:mod:`.jsonstream`       reading a multi-GB JSON document in bounded memory, refusing
                         what cannot be stored (non-finite numbers, deep nesting)
:mod:`.names`            slugs and model names that can be stored and served; the
                         model a ``metadata.scan`` names
:mod:`.shared_ids`       node ids two nodes share (circuit-tracer's error / layer-0
                         feature ids) and which node each link means
:mod:`.importer`         ``headgraph import FILE``: one graph, streamed, one transaction
:mod:`.pruning`          circuit-tracer's influence and pruning on sparse links
:mod:`.pruning_height`   its edge step, fast, on links grouped by target height
:mod:`.default_view`     the default pruned view stored at import
:mod:`.graphs`           the read side: stored graphs by (model, slug), their nodes,
                         view records
:mod:`.views`            the view a user asks for: Neuronpedia's influence filter or
                         circuit-tracer's recomputed pruning, pinned nodes kept
:mod:`.pruned`           recomputed pruned views (cached per process)
:mod:`.neighbourhood`    a node's upstream and downstream links
:mod:`.export`           graphs and views back as Neuronpedia JSON
:mod:`.types`            GraphQL types and root fields (``attributionGraph(s)``)
:mod:`.routes`           ``GET /graphs/{model}/{slug}.json``
:mod:`.notebook`         ``headgraph.open(db).graph(slug)``: views as DataFrames, networkx
:mod:`.transfer`         what ``headgraph copy`` carries of graphs
:mod:`.check`            what ``headgraph check`` verifies of graphs
:mod:`.synth`            synthetic graphs in circuit-tracer's shape (tests, benchmarks)
=======================  ==============================================================

The page that draws a graph is ``headgraph/api/static/attribution.html`` (served with the
built-in viewer at ``/viewer/attribution.html``; it talks only to GraphQL).

Its tables are declared with the others in :mod:`headgraph.schema.tables` (the database
file is one public interface with one schema version). It depends on the core
(``schema``, ``queries``, ``api``) and never the other way: :mod:`headgraph.server`,
:mod:`headgraph.maintenance` and the CLI bring it in.
"""
