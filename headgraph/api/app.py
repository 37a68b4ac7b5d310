"""The HTTP app: a plain ASGI application (no web framework needed).

Routes
------
``/graphql``        POST ``{"query", "variables", "operationName"}`` (JSON) or GET
                    ``?query=...&variables=...`` (queries only); GET from a browser
                    (``Accept: text/html``) serves GraphiQL, vendored and served by
                    headgraph (:mod:`headgraph.api.graphiql`): it works offline.
``/schema.graphql`` the schema as SDL text.
``/healthz``        ``{"status": "ok", "database": "ok" | "locked" | "error", ...}``, always
                    200 while the process is up.
``/``               the viewer page; ``/viewer/...`` its files (:mod:`headgraph.api.viewer`).
``/export/...``     a model's graph for viewers (JSON, Cytoscape, GraphML, DOT), spooled then sent;
``/plot/...``       PNG plots (:mod:`headgraph.api.export_routes`).

Features add routes of their own (``routes``: each answers the paths its ``handles``
accepts, e.g. ``/graphs/{slug}.json`` of :mod:`headgraph.attribution.routes`);
:mod:`headgraph.server` assembles the app that is served.

Responses are JSON: ``{"data": ..., "errors": [...]}``, HTTP 200 for every request that
was executed (errors included, each with ``extensions.code``); 400 for a body that is not
a GraphQL request (``BAD_INPUT``), 405 for a wrong method or a mutation over GET, 413 for
a body over ``max_body_bytes`` (``LIMIT_EXCEEDED``), 415 for a POST body that is not
``Content-Type: application/json`` (``BAD_INPUT``; a browser cannot send that type to
another origin without a CORS preflight), 503 + ``Retry-After`` while an ingest holds the
database (``DATABASE_LOCKED``, see :mod:`headgraph.api.execute`).

Safe defaults (:mod:`headgraph.api.settings`): the ``Host`` header must name this server
(the loopback names, the address the client connected to, or ``allowed_hosts``; 400
``BAD_INPUT`` otherwise), so a web page cannot read a loopback server through DNS
rebinding; a GET that makes the server work (``/graphql`` with a query, ``/export``,
``/plot``, ``/graphs``) is refused (403) when a browser says another site sent it
(``Sec-Fetch-Site: cross-site`` or ``same-site``, or an ``Origin`` of another site) unless
``cors_origins`` allows that origin or it carries ``Content-Type: application/json``
(which a page can send only after a CORS preflight); no CORS headers unless
``cors_origins`` names the origin (preflight ``OPTIONS`` answered 204 for those, 403 for
others); with ``auth_token`` set, every route but ``/healthz`` needs ``Authorization:
Bearer <token>`` (compared in constant time; 401 ``UNAUTHENTICATED`` and
``WWW-Authenticate: Bearer`` otherwise). A GraphQL answer over ``max_response_bytes`` is
replaced by a ``LIMIT_EXCEEDED`` error, and the heap is trimmed after a large one
(:mod:`headgraph.api.heap`). Each request is logged on ``headgraph.access`` as method,
path (no query string), status and duration; ``log_queries`` adds the GraphQL query.

strawberry's own ASGI view is not used because it needs starlette, which headgraph does
not otherwise depend on; this module is the whole transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs

from headgraph.api.delivery import in_own_thread
from headgraph.api.errors import INTERNAL_ERROR, INTERNAL_MESSAGE
from headgraph.api.execute import Outcome, Service, refusal
from headgraph.api.export_routes import ExportRoutes
from headgraph.api.graphiql import GraphiQLPage
from headgraph.api.http import Message, Receive, Scope, Send, encode_json
from headgraph.api.http import respond as _respond
from headgraph.api.http import send_bytes as _send
from headgraph.api.http import send_json as _json
from headgraph.api.origin import cross_site, host_allowed
from headgraph.api.settings import Settings
from headgraph.api.viewer import Viewer
from headgraph.errors import (
    BadInputError,
    DatabaseLockedError,
    HeadgraphError,
    LimitExceededError,
)
from headgraph.queries.models import list_models

log = logging.getLogger("headgraph.api")
access_log = logging.getLogger("headgraph.access")

UNAUTHENTICATED = "UNAUTHENTICATED"
LOGGED_QUERY_CHARS = 4096
_QUERY_KEY = "headgraph.query"  # where _graphql leaves the query for the log line
HEALTH_WAIT_S = 0.5  # /healthz waits this long for its check of the database
WORK_PREFIXES = ("/export/", "/plot/", "/graphs/")  # GET routes that make the server work


class _ClientGone(Exception):
    pass


class Route(Protocol):
    """A group of HTTP routes: answers the paths ``handles`` accepts."""

    def handles(self, path: str) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


RouteFactory = Callable[[Service], Route]


class HeadgraphApp:
    """ASGI callable serving one database read-only."""

    def __init__(self, service: Service, routes: Sequence[RouteFactory] = ()) -> None:
        self.service = service
        self.settings = service.settings
        self._sdl = (service.schema.as_str() + "\n").encode()
        self._graphiql = GraphiQLPage()
        self._viewer = Viewer()
        self._routes: tuple[Route, ...] = (ExportRoutes(service),
                                           *(make(service) for make in routes))
        token = self.settings.auth_token
        self._token_digest = None if token is None else _digest(token.encode())
        self._origins = frozenset(self.settings.cors_origins)
        self._trimmer = service.trimmer
        self._health_check: asyncio.Future | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            start, status, logged = time.perf_counter(), [0], [False]
            extra = self._cors_headers(scope)

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    if extra:
                        message = {**message, "headers": [*message.get("headers", []), *extra]}
                elif not message.get("more_body", False) and not logged[0]:
                    logged[0] = True  # before the last part leaves: the line is written
                    self._log(scope, status[0], time.perf_counter() - start)  # by then
                await send(message)

            try:
                await self._http(scope, receive, send_with_headers)
            except _ClientGone:
                pass
            finally:
                if not logged[0]:
                    self._log(scope, status[0], time.perf_counter() - start)
        else:  # websockets: no subscriptions here
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.service.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if not host_allowed(scope, self.settings.allowed_hosts):
                host = _header(scope, b"host")[:100]
                await _respond(send, refusal(BadInputError(
                    f"this server does not answer to the host {host!r}: a web page reaching "
                    "a loopback server through DNS rebinding looks like this. If it is "
                    "this server's name, add it to allowed_hosts."), 400))
            elif method in ("GET", "HEAD") and self._works(scope) \
                    and cross_site(scope, self._origins):
                await _respond(send, refusal(BadInputError(
                    "a page of another site may not make this server work (the browser "
                    "said Sec-Fetch-Site or Origin). Call it from its own pages, list the "
                    "page's origin in cors_origins, or send Content-Type: "
                    "application/json."), 403))
            elif method == "OPTIONS" and self._origins and _header(scope, b"origin"):
                await self._preflight(scope, send)
            elif self._token_digest is not None and path != "/healthz" \
                    and not self._authorized(scope):
                await _respond(send, refusal(_Unauthenticated(
                    "this server needs a bearer token: send `Authorization: Bearer <token>`."),
                    401, {"WWW-Authenticate": 'Bearer realm="headgraph"'}))
            elif path == "/graphql":
                await self._graphql(scope, receive, send)
            elif path in ("/healthz", "/schema.graphql") and method != "GET":
                await _respond(send, refusal(BadInputError(f"{method} is not allowed on "
                                                           f"{path}; use GET."), 405,
                                             {"Allow": "GET"}))
            elif path == "/healthz":
                await _json(send, 200, await self._healthz())
            elif path == "/schema.graphql":
                await _send(send, 200, self._sdl, "text/plain; charset=utf-8")
            elif self._viewer.handles(path):
                await self._viewer(scope, send)
            elif route := next((r for r in self._routes if r.handles(path)), None):
                await route(scope, receive, send)
            else:
                await _respond(send, refusal(BadInputError(
                    f"no such path {path!r}; the API is at /graphql."), 404))
        except _ClientGone:
            raise
        except Exception:  # a bug: answer without a trace, keep it in the log
            log.exception("internal error answering %s %s", method, path)
            await _json(send, 500, {"errors": [{"message": INTERNAL_MESSAGE,
                                                "extensions": {"code": INTERNAL_ERROR}}]})

    @staticmethod
    def _works(scope: Scope) -> bool:
        """Whether a GET makes the server do work (not a page, a file or the schema)."""
        path = scope["path"]
        if path == "/graphql":
            return b"query=" in scope.get("query_string", b"")
        return path.startswith(WORK_PREFIXES)

    async def _graphql(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "GET":
            params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1"),
                                                    keep_blank_values=True).items()}
            if "query" not in params and _accepts_html(scope):
                await self._graphiql(send)
                return
            try:
                variables = _json_param(params.get("variables"), "variables")
            except BadInputError as exc:
                await _respond(send, refusal(exc, 400))
                return
            if self.settings.log_queries:
                scope[_QUERY_KEY] = {"operationName": params.get("operationName"),
                                     "query": params.get("query"), "variables": variables}
            outcome = await self.service.execute(params.get("query"), variables,
                                                  params.get("operationName"), query_only=True)
        elif method == "POST":
            if not _is_json(scope):
                await _respond(send, refusal(BadInputError(
                    "send the request as JSON with Content-Type: application/json."), 415))
                return
            try:
                request = _request_body(await _read_body(scope, receive,
                                                         self.settings.max_body_bytes))
            except LimitExceededError as exc:
                await _respond(send, refusal(exc, 413))
                return
            except BadInputError as exc:
                await _respond(send, refusal(exc, 400))
                return
            if self.settings.log_queries:
                scope[_QUERY_KEY] = {k: request.get(k)
                                     for k in ("operationName", "query", "variables")}
            outcome = await self.service.execute(request.get("query"), request.get("variables"),
                                                  request.get("operationName"))
        else:
            outcome = refusal(BadInputError(f"{method} is not allowed on /graphql; use POST "
                                            "(or GET for queries)."), 405,
                              {"Allow": "GET, POST"})
        await self._answer(send, outcome)

    async def _answer(self, send: Send, outcome: Outcome) -> None:
        """Send a GraphQL outcome as JSON, or LIMIT_EXCEEDED in its place when it is over
        ``max_response_bytes``; trim the heap after a large one."""
        body = encode_json(outcome.body)
        built = len(body)
        limit = self.settings.max_response_bytes
        if limit and built > limit:
            outcome = refusal(LimitExceededError(
                f"this answer is {built:,} bytes, over this server's limit of {limit:,} "
                "(max_response_bytes). Ask for fewer fields or items (lower first/top), or "
                "page through them."), 200)
            body = encode_json(outcome.body)
        await _send(send, outcome.status, body, "application/json", outcome.headers)
        del body
        self._trimmer.after(built, outcome.heavy)

    # --- safe defaults: CORS, bearer token, request log ---------------------------------

    def _allowed_origin(self, scope: Scope) -> str | None:
        origin = _header(scope, b"origin")
        if not origin or not self._origins:
            return None
        if "*" in self._origins:
            return "*"
        return origin if origin.rstrip("/") in self._origins else None

    def _cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """Headers for every response: none unless ``cors_origins`` is set."""
        if not self._origins:
            return []
        headers = [(b"vary", b"Origin")]
        allowed = self._allowed_origin(scope)
        if allowed is not None:
            headers += [(b"access-control-allow-origin", allowed.encode("latin-1")),
                        (b"access-control-expose-headers", b"Retry-After, X-Headgraph-Edges, "
                         b"X-Headgraph-Truncated, Content-Disposition")]
        return headers

    async def _preflight(self, scope: Scope, send: Send) -> None:
        if self._allowed_origin(scope) is None:
            await _respond(send, refusal(BadInputError(
                "this origin may not call this server (cors_origins)."), 403))
            return
        await _send(send, 204, b"", "text/plain", {
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600"})

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, token = _header(scope, b"authorization").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_digest(token.strip().encode("latin-1")),
                                   self._token_digest or b"")

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        line = f"{scope['method']} {scope['path'][:256]!r} {status} {seconds * 1000:.1f}ms"
        query = scope.get(_QUERY_KEY)
        if query is not None:
            text = json.dumps(query, default=str)
            cut = "..." if len(text) > LOGGED_QUERY_CHARS else ""
            line += f" {text[:LOGGED_QUERY_CHARS]}{cut}"
        access_log.info(line)

    async def _healthz(self) -> dict[str, Any]:
        """Always answered within about :data:`HEALTH_WAIT_S`: ``unresponsive`` when the
        database does not answer in time (a stalled PostgreSQL). One check runs at a
        time, in a thread of its own (not the worker pool), taking no database turn: while one is under way, others
        wait for it, so polls of a stalled database never pile up threads."""
        check = self._health_check
        if check is None or check.done():
            # a thread of its own: the event loop's worker pool may be full of GraphQL work
            check = self._health_check = asyncio.ensure_future(in_own_thread(self._health))
            check.add_done_callback(lambda task: task.cancelled() or task.exception())
        done, _ = await asyncio.wait({check}, timeout=HEALTH_WAIT_S)
        if check in done and not check.cancelled() and check.exception() is None:
            return check.result()
        return {"status": "ok", "database": "unresponsive", "retryable": True}

    def _health(self) -> dict[str, Any]:
        try:
            with self.service.open_session() as db:
                n = len(list_models(db))
        except DatabaseLockedError:
            return {"status": "ok", "database": "locked", "retryable": True}
        except HeadgraphError as exc:
            return {"status": "ok", "database": "error", "code": exc.code}
        return {"status": "ok", "database": "ok", "models": n}


def create_app(db: str | os.PathLike[str] | None, settings: Settings | None = None, *,
               queries: Sequence[type] = (), routes: Sequence[RouteFactory] = ()
               ) -> HeadgraphApp:
    """The ASGI app serving ``db`` read-only with ``settings`` (defaults if ``None``), with
    the root fields of ``queries`` and the HTTP ``routes`` of the features that
    :mod:`headgraph.server` passes.

    Checks the database at once (missing file, empty, other schema version: a
    :class:`~headgraph.errors.DatabaseError`); a database locked by an ingest is not an
    error here: requests get ``DATABASE_LOCKED`` until the ingest finishes.
    """
    service = Service(db, settings, queries)
    try:
        service.reader()
    except DatabaseLockedError:
        log.warning("%s is locked by a writer; requests get DATABASE_LOCKED until it is free.",
                    service.target)
    return HeadgraphApp(service, routes)


class _Unauthenticated(HeadgraphError):
    code = UNAUTHENTICATED


def _digest(token: bytes) -> bytes:
    """Tokens are compared as SHA-256 digests: equal lengths, so the comparison's time
    says nothing about the token (not even its length)."""
    return hashlib.sha256(token).digest()


def _header(scope: Scope, name: bytes) -> str:
    return dict(scope["headers"]).get(name, b"").decode("latin-1")


def _accepts_html(scope: Scope) -> bool:
    return "text/html" in _header(scope, b"accept")


def _is_json(scope: Scope) -> bool:
    media = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
    return media == "application/json"


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
