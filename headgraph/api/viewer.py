"""The built-in viewer: one HTML page at ``/`` and its static files under ``/viewer/``.

The page (``static/index.html``, ``static/viewer.css``, and ``static/viewer.js`` with the
ES modules it imports, ``static/viewer-*.js``) draws a model's head graph with
Cytoscape.js, vendored as one file (``static/vendor/cytoscape.min.js``, built by
``viewer/build.mjs``: see ``viewer/README.md``), and talks only to ``POST /graphql``.
Nothing is fetched from another origin, so it works offline. The same route serves
GraphiQL's vendored files (``static/vendor/graphiql/``) to the page at ``/graphql``
(:mod:`headgraph.api.graphiql`).

Routes
------
``/``                   ``static/index.html``
``/viewer/<file>``      ``static/<file>``; only files that exist under ``static/`` when
                        the app starts are served (no path is joined with user input).

GET and HEAD only (405 otherwise); a missing file is a 404 in the API's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from headgraph.api.errors import request_error
from headgraph.api.graphiql import PAGE as GRAPHIQL_PAGE
from headgraph.errors import BadInputError

PREFIX = "/viewer/"

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}

# The page loads only its own files and posts only to its own /graphql.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Asset:
    """One static file, read once at start-up."""

    body: bytes
    content_type: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    for entry in folder.iterdir():
        if entry.name.startswith(".") or prefix + entry.name == GRAPHIQL_PAGE:
            continue  # GraphiQL's page is served at /graphql (headgraph.api.graphiql)
        if entry.is_dir():
            found |= _walk(entry, f"{prefix}{entry.name}/")
        elif any(entry.name.endswith(ext) for ext in CONTENT_TYPES):
            found[prefix + entry.name] = entry
    return found


class Viewer:
    """Serves the viewer's files from ``static`` (default: this package's ``static/``).

    The file table is built once: ``/viewer/x`` is answered only if ``x`` is a key of it.
    """

    def __init__(self, static: Traversable | None = None) -> None:
        root = static if static is not None else files("headgraph.api") / "static"
        self.assets: dict[str, Asset] = {}
        for rel, entry in _walk(root).items():
            ext = rel[rel.rfind("."):]
            self.assets[PREFIX + rel] = Asset(entry.read_bytes(), CONTENT_TYPES[ext])
        if PREFIX + "index.html" in self.assets:
            self.assets["/"] = self.assets[PREFIX + "index.html"]

    def handles(self, path: str) -> bool:
        """Whether ``path`` belongs to the viewer (``/`` or under ``/viewer/``)."""
        return path == "/" or path.startswith(PREFIX)

    async def __call__(self, scope: MutableMapping[str, Any], send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await _error(send, 405, f"{method} is not allowed on {path}; use GET.",
                         {"allow": "GET, HEAD"})
            return
        asset = self.assets.get(path)
        if asset is None:
            await _error(send, 404, f"no such path {path!r}; the viewer is at / and the API "
                                    "at /graphql.")
            return
        headers = [(b"content-type", asset.content_type.encode()),
                   (b"content-length", str(len(asset.body)).encode()),
                   (b"cache-control", b"no-cache"),
                   (b"x-content-type-options", b"nosniff")]
        if asset.content_type.startswith("text/html"):
            headers += [(b"content-security-policy", CSP.encode()),
                        (b"referrer-policy", b"no-referrer")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if method == "HEAD" else asset.body})


async def _error(send: Send, status: int, message: str,
                 extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"errors": [request_error(BadInputError(message))]}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
