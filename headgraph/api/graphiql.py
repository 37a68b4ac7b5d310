"""GraphiQL served by headgraph itself: the page a browser gets from ``GET /graphql``.

The page (``static/graphiql.html`` with ``static/graphiql.js`` and ``static/graphiql.css``)
loads GraphiQL 3, React 18 and ReactDOM 18 from ``static/vendor/graphiql/`` (npm's own
UMD builds, copied with their licences by ``viewer/build.mjs``; see ``viewer/README.md``),
which the viewer's route serves under ``/viewer/vendor/graphiql/``. Nothing is fetched
from another origin, so the page works on an air-gapped machine; its Content-Security-
Policy says so to the browser as well.

strawberry's ``get_graphql_ide_html`` is not used: it loads React and GraphiQL from
unpkg.com, and an offline browser then shows "Loading..." for ever.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

PAGE = "graphiql.html"
"""The page's file under ``static/``; the viewer does not serve it under ``/viewer/``
(its relative links hold from ``/graphql`` only)."""

NONCE = "{{style-nonce}}"
"""Where the page's HTML takes this response's nonce (on the ``<script>`` of graphiql.js)."""

# The viewer's policy plus what GraphiQL needs: its fonts are data: URLs in its CSS, and its
# dialogs add one <style> element (react-remove-scroll), allowed by a nonce made for each
# response: graphiql.js hands it to that code as the global __webpack_nonce__.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; "
       "img-src 'self' data:; font-src data:; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GraphiQLPage:
    """The GraphiQL page, read once from ``static`` (default: this package's ``static/``)."""

    def __init__(self, static: Traversable | None = None) -> None:
        root = static if static is not None else files("headgraph.api") / "static"
        self.template = (root / PAGE).read_text(encoding="utf-8")
        if NONCE not in self.template:
            raise ValueError(f"{PAGE} has no {NONCE} for the style nonce")

    def render(self) -> tuple[bytes, str]:
        """The page and its Content-Security-Policy, with a fresh nonce."""
        nonce = secrets.token_urlsafe(18)
        return self.template.replace(NONCE, nonce).encode(), CSP.format(nonce=nonce)

    async def __call__(self, send: Send) -> None:
        body, csp = self.render()
        headers = [(b"content-type", b"text/html; charset=utf-8"),
                   (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"),
                   (b"x-content-type-options", b"nosniff"),
                   (b"content-security-policy", csp.encode()),
                   (b"referrer-policy", b"no-referrer")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
