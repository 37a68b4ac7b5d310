"""The HTTP app: a plain ASGI application (no web framework needed).

Routes
------
``/graphql``        POST ``{"query", "variables", "operationName"}`` (JSON) or GET
                    ``?query=...&variables=...`` (queries only); GET from a browser
                    (``Accept: text/html``) serves GraphiQL.
``/schema.graphql`` the schema as SDL text.
``/healthz``        ``{"status": "ok", "database": "ok" | "locked" | "error", ...}``, always
                    200 while the process is up.
``/``               the viewer page; ``/viewer/...`` its files (:mod:`headgraph.api.viewer`).
``/export/...``     a model's graph for viewers (JSON, Cytoscape, GraphML, DOT), streamed;
``/plot/...``       PNG plots (:mod:`headgraph.api.routes`).

Responses are JSON: ``{"data": ..., "errors": [...]}``, HTTP 200 for every request that
was executed (errors included, each with ``extensions.code``); 400 for a body that is not
a GraphQL request (``BAD_INPUT``), 405 for a wrong method or a mutation over GET, 413 for
a body over ``max_body_bytes`` (``LIMIT_EXCEEDED``), 503 + ``Retry-After`` while an ingest
holds the database (``DATABASE_LOCKED``, see :mod:`headgraph.api.execute`).

strawberry's own ASGI view is not used because it needs starlette, which headgraph does
not otherwise depend on; this module is the whole transport (~150 lines).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from strawberry.http.ides import get_graphql_ide_html

from headgraph.api.errors import INTERNAL_ERROR, INTERNAL_MESSAGE
from headgraph.api.execute import Executor, Outcome, refusal
from headgraph.api.routes import GraphRoutes
from headgraph.api.settings import Settings
from headgraph.api.viewer import Viewer
from headgraph.errors import (
    BadInputError,
    DatabaseLockedError,
    HeadgraphError,
    LimitExceededError,
)
from headgraph.queries.models import list_models

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("headgraph.api")


class _ClientGone(Exception):
    pass


class HeadgraphApp:
    """ASGI callable serving one database read-only."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.settings = executor.settings
        self._sdl = (executor.schema.as_str() + "\n").encode()
        self._graphiql = get_graphql_ide_html("graphiql").encode()
        self._viewer = Viewer()
        self._graph_routes = GraphRoutes(executor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except _ClientGone:
                pass
        else:  # websockets: no subscriptions here
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.executor.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if path == "/graphql":
                await self._graphql(scope, receive, send)
            elif path in ("/healthz", "/schema.graphql") and method != "GET":
                await _respond(send, refusal(BadInputError(f"{method} is not allowed on "
                                                           f"{path}; use GET."), 405,
                                             {"Allow": "GET"}))
            elif path == "/healthz":
                await _json(send, 200, await asyncio.to_thread(self._health))
            elif path == "/schema.graphql":
                await _send(send, 200, self._sdl, "text/plain; charset=utf-8")
            elif self._viewer.handles(path):
                await self._viewer(scope, send)
            elif self._graph_routes.handles(path):
                await self._graph_routes(scope, receive, send)
            else:
                await _respond(send, refusal(BadInputError(
                    f"no such path {path!r}; the API is at /graphql."), 404))
        except _ClientGone:
            raise
        except Exception:  # a bug: answer without a trace, keep it in the log
            log.exception("internal error answering %s %s", method, path)
            await _json(send, 500, {"errors": [{"message": INTERNAL_MESSAGE,
                                                "extensions": {"code": INTERNAL_ERROR}}]})

    async def _graphql(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "GET":
            params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1"),
                                                    keep_blank_values=True).items()}
            if "query" not in params and _accepts_html(scope):
                await _send(send, 200, self._graphiql, "text/html; charset=utf-8")
                return
            try:
                variables = _json_param(params.get("variables"), "variables")
            except BadInputError as exc:
                await _respond(send, refusal(exc, 400))
                return
            outcome = await self.executor.execute(params.get("query"), variables,
                                                  params.get("operationName"), query_only=True)
        elif method == "POST":
            try:
                request = _request_body(await _read_body(scope, receive,
                                                         self.settings.max_body_bytes))
            except LimitExceededError as exc:
                await _respond(send, refusal(exc, 413))
                return
            except BadInputError as exc:
                await _respond(send, refusal(exc, 400))
                return
            outcome = await self.executor.execute(request.get("query"), request.get("variables"),
                                                  request.get("operationName"))
        else:
            outcome = refusal(BadInputError(f"{method} is not allowed on /graphql; use POST "
                                            "(or GET for queries)."), 405,
                              {"Allow": "GET, POST"})
        await _respond(send, outcome)

    def _health(self) -> dict[str, Any]:
        try:
            with self.executor.reader().session() as db:
                n = len(list_models(db))
        except DatabaseLockedError:
            return {"status": "ok", "database": "locked", "retryable": True}
        except HeadgraphError as exc:
            return {"status": "ok", "database": "error", "code": exc.code}
        return {"status": "ok", "database": "ok", "models": n}


def create_app(db: str | os.PathLike[str] | None, settings: Settings | None = None) -> HeadgraphApp:
    """The ASGI app serving ``db`` read-only with ``settings`` (defaults if ``None``).

    Checks the database at once (missing file, empty, other schema version: a
    :class:`~headgraph.errors.DatabaseError`); a database locked by an ingest is not an
    error here: requests get ``DATABASE_LOCKED`` until the ingest finishes.
    """
    executor = Executor(db, settings)
    try:
        executor.reader()
    except DatabaseLockedError:
        log.warning("%s is locked by a writer; requests get DATABASE_LOCKED until it is free.",
                    executor.target)
    return HeadgraphApp(executor)


def _accepts_html(scope: Scope) -> bool:
    accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept


def _json_param(raw: str | None, name: str) -> Any:
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BadInputError(f"`{name}` must be JSON.") from None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    too_big = LimitExceededError(f"the request body is over {limit} bytes (max_body_bytes).")
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _request_body(raw: bytes) -> dict[str, Any]:
    try:
        request = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadInputError("the body is not JSON; send {\"query\": \"...\", \"variables\": "
                            "{...}} with Content-Type: application/json.") from None
    if isinstance(request, list):
        raise BadInputError("batched requests (a JSON list) are not supported; send one "
                            "request object.")
    if not isinstance(request, dict):
        raise BadInputError("the body must be a JSON object {\"query\": \"...\"}.")
    return request


async def _respond(send: Send, outcome: Outcome) -> None:
    await _json(send, outcome.status, outcome.body, outcome.headers)


async def _json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    await _send(send, status, json.dumps(body, default=str).encode(), "application/json",
                headers)


async def _send(send: Send, status: int, body: bytes, content_type: str,
                headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", content_type.encode()),
           (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
