"""One exception family for everything headgraph refuses to do.

Every error says what was wrong and what to do about it. Each class carries a stable
``code`` that the GraphQL API returns in ``extensions.code`` and the CLI prints, so
scripts can branch on it without parsing messages, and an ``exit_status`` that the CLI
exits with:

======  ===========================================================================
status  meaning
======  ===========================================================================
0       done
1       done in part: some models of a fleet failed, or a query answered with errors
2       bad input: an argument, file, source or query that cannot be used as given
3       not found: no such model, node or graph
4       exists: already stored (``--replace`` overwrites it)
5       the database cannot be opened or written as asked
75      the database is busy (another writer holds it): try again (``EX_TEMPFAIL``)
130     interrupted (Ctrl-C); nothing was written
======  ===========================================================================
"""

from __future__ import annotations


class HeadgraphError(Exception):
    """Base class: a clear, user-facing refusal (never a bug)."""

    code = "HEADGRAPH_ERROR"
    exit_status = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(HeadgraphError):
    """An argument, file or query that cannot be used as given."""

    code = "BAD_INPUT"


class SourceError(BadInputError):
    """A model source that cannot be loaded (missing path, not a model, offline hub name)."""

    code = "BAD_SOURCE"


class UnsupportedArchitectureError(SourceError):
    """An architecture that headgraph cannot load or cannot score exactly."""

    code = "UNSUPPORTED_ARCHITECTURE"


class BadWeightsError(SourceError):
    """Weights that would give meaningless scores (NaN/Inf, shapes that disagree)."""

    code = "BAD_WEIGHTS"


class DatabaseError(HeadgraphError):
    """A database that cannot be opened or written as asked."""

    code = "DATABASE_ERROR"
    exit_status = 5


class DatabaseLockedError(DatabaseError):
    """Another process holds the DuckDB file for writing."""

    code = "DATABASE_LOCKED"
    exit_status = 75


class SchemaVersionError(DatabaseError):
    """A database written by another schema version of headgraph."""

    code = "SCHEMA_VERSION"


class ModelExistsError(DatabaseError):
    """A model name that is already stored (use --replace to overwrite)."""

    code = "MODEL_EXISTS"
    exit_status = 4


class GraphExistsError(DatabaseError):
    """An attribution graph slug that is already stored (use --replace to overwrite)."""

    code = "GRAPH_EXISTS"
    exit_status = 4


class ModelNotFoundError(HeadgraphError):
    """A model name that is not in the database."""

    code = "MODEL_NOT_FOUND"
    exit_status = 3


class NodeNotFoundError(HeadgraphError):
    """A node name that the model does not have."""

    code = "NODE_NOT_FOUND"
    exit_status = 3


class LimitExceededError(HeadgraphError):
    """A request over one of the documented limits (top, first, depth...)."""

    code = "LIMIT_EXCEEDED"


class ServerBusyError(HeadgraphError):
    """Every turn of the server's database (or export slot) stayed taken while a request
    waited for one; retry after a moment."""

    code = "SERVER_BUSY"
