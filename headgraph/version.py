"""headgraph's version: stored on every model and graph it writes (``headgraph_version``)."""

__version__ = "0.1.0"
