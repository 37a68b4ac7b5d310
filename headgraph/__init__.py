"""headgraph: a graph database of transformer circuit structure."""

__version__ = "0.1.0"
