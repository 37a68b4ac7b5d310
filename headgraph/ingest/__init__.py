"""headgraph."""
