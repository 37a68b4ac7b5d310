"""``python -m headgraph.cli``: the same command line as ``headgraph``."""

from headgraph.cli import main

main()
