"""``serve(db)``: run the API under uvicorn (what ``headgraph serve`` and the demo call)."""

from __future__ import annotations

import copy
import os
from typing import Any

from headgraph.api.settings import Settings


def log_config(log_level: str = "info") -> dict[str, Any]:
    """uvicorn's logging setup plus the ``headgraph`` loggers on the same handler.

    uvicorn's own access log is off (see :func:`serve`): it would print each GET query
    string, which holds the GraphQL query; ``headgraph.access`` logs one line per request
    (method, path without the query string, status, duration) instead.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["headgraph"] = {"handlers": ["default"], "level": log_level.upper(),
                                      "propagate": False}
    return config


def serve(db: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          *, log_level: str = "info", **settings: Any) -> None:
    """Serve ``db`` read-only at ``http://host:port/graphql`` until interrupted.

    ``settings`` are the names of :data:`headgraph.api.settings.SETTINGS`
    (``serve(db, max_depth=12)``); unknown names are refused before anything starts. The
    default ``host`` serves this machine only.
    """
    import uvicorn

    from headgraph.api.app import create_app
    from headgraph.api.heap import settle_heap

    app = create_app(db, Settings.of(settings))
    settle_heap()  # this process now serves until it ends: its start-up objects stay
    auth = " (bearer token required)" if app.settings.auth_token else ""
    print(f"headgraph: serving {app.executor.target} at http://{host}:{port}/graphql{auth} "
          "(GraphiQL in a browser; Ctrl-C stops)", flush=True)
    # h11, never httptools (uvicorn's choice when it is installed): h11 refuses a request
    # head over 16 KB (tests/test_hostile.py), uvicorn on httptools took a 1 MB header
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on", http="h11",
                access_log=False, log_config=log_config(log_level))
