"""``serve(db)``: run the API under uvicorn (what ``headgraph serve`` and the demo call)."""

from __future__ import annotations

import os
from typing import Any

from headgraph.api.settings import Settings


def serve(db: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          *, log_level: str = "info", **settings: Any) -> None:
    """Serve ``db`` read-only at ``http://host:port/graphql`` until interrupted.

    ``settings`` are the names of :data:`headgraph.api.settings.SETTINGS`
    (``serve(db, max_depth=12)``); unknown names are refused before anything starts.
    """
    import uvicorn

    from headgraph.api.app import create_app

    app = create_app(db, Settings.of(settings))
    print(f"headgraph: serving {app.executor.target} at http://{host}:{port}/graphql "
          "(GraphiQL in a browser; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")
