"""The API as it is served: the composition graph's GraphQL schema and routes
(:mod:`headgraph.api`) with every feature's root fields and routes added, and
``serve(db)``, which runs it under uvicorn (``headgraph serve``, the demo, notebooks).

This module and the CLI are where features meet the core; no feature or core module
imports them. ``python -m headgraph.server`` prints the served schema as SDL (the snapshot
``headgraph/api/schema.graphql`` is checked against it by a test).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

from headgraph.api.app import HeadgraphApp
from headgraph.api.app import create_app as create_core_app
from headgraph.api.execute import Service
from headgraph.api.schema import HeadgraphSchema, build_schema
from headgraph.api.settings import Settings
from headgraph.attribution.routes import AttributionRoutes
from headgraph.attribution.types import AttributionQuery

QUERIES: tuple[type, ...] = (AttributionQuery,)
"""Root fields of the features, merged into ``Query`` after the core's, in this order."""

ROUTES = (AttributionRoutes,)
"""HTTP routes of the features (``/graphs/...``), tried after the core's."""


def served_schema(settings: Settings | None = None) -> HeadgraphSchema:
    """The schema ``headgraph serve`` answers with (core and features)."""
    return build_schema(settings, QUERIES)


def make_service(db: str | os.PathLike[str] | None, settings: Settings | None = None
                 ) -> Service:
    """The request service over ``db`` with every feature's root fields (what ``headgraph
    query`` runs a document against)."""
    return Service(db, settings, QUERIES)


def create_app(db: str | os.PathLike[str] | None, settings: Settings | None = None
               ) -> HeadgraphApp:
    """The ASGI app serving ``db`` read-only: the core's routes and every feature's."""
    return create_core_app(db, settings, queries=QUERIES, routes=ROUTES)


def sdl() -> str:
    """The served schema as SDL text (what ``/schema.graphql`` serves)."""
    return served_schema().as_str() + "\n"


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


def uvicorn_config(app: HeadgraphApp, host: str = "127.0.0.1", port: int = 8000, *,
                   log_level: str = "info", configure_logging: bool = True) -> Any:
    """uvicorn's configuration for ``app``: h11 with the connection guards of
    :mod:`headgraph.api.connections` (``client_timeout_s``, ``max_connections`` under
    the file limit), ``keep_alive_s``, and no access log (see :func:`log_config`;
    ``configure_logging=False`` leaves the process's logging as it is, for a server
    inside another program)."""
    import uvicorn

    from headgraph.api.connections import connection_cap, guarded_protocol

    settings = app.settings
    cap = connection_cap(settings.max_connections)
    # h11, never httptools (uvicorn's choice when it is installed): h11 refuses a request
    # head over 16 KB (tests/test_hostile.py), uvicorn on httptools took a 1 MB header
    protocol = guarded_protocol(settings.client_timeout_s, cap, settings.retry_after_s)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                          http=protocol, access_log=False,
                          log_config=log_config(log_level) if configure_logging else None,
                          timeout_keep_alive=max(1, math.ceil(settings.keep_alive_s)))


def serve(db: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          *, log_level: str = "info", **settings: Any) -> None:
    """Serve ``db`` read-only at ``http://host:port/graphql`` until interrupted.

    ``settings`` are the names of :data:`headgraph.api.settings.SETTINGS`
    (``serve(db, max_depth=12)``); unknown names are refused before anything starts. The
    default ``host`` serves this machine only.
    """
    import uvicorn

    from headgraph.api.heap import limit_arenas, settle_heap

    app = create_app(db, Settings.of(settings))
    limit_arenas()  # before the worker threads make arenas of their own
    settle_heap()  # this process now serves until it ends: its start-up objects stay
    auth = " (bearer token required)" if app.settings.auth_token else ""
    print(f"headgraph: serving {app.service.target} at http://{host}:{port}/graphql{auth} "
          "(GraphiQL in a browser; Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not app.settings.allowed_hosts:
        print("headgraph: requests are answered when they name this server by its address "
              "or a loopback name; add its host names with --setting allowed_hosts=NAME,...",
              flush=True)
    uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level)).run()


if __name__ == "__main__":  # python -m headgraph.server > headgraph/api/schema.graphql
    print(sdl(), end="")
