"""``GET /graphs/{model}/{slug}.json`` (and ``/graphs/{slug}.json`` while no other model
has the slug): attribution graphs as Neuronpedia graph JSON, whole or in views, so
Neuronpedia's frontend (or any other) can open a big graph piece by piece. A model name
with a ``/`` (``google/gemma-2-2b``) travels percent-encoded (``google%2Fgemma-2-2b``).

===========================================  ==============================================
request                                      answer
===========================================  ==============================================
``/graphs/{model}/{slug}.json``              the graph as imported (every node and link;
                                             refused over ``max_export_edges`` links)
``?node_threshold=0.6``                      the graph's pruned view
                                             (:mod:`headgraph.attribution.views`): by
                                             default Neuronpedia's filter on the file's
                                             influence for files that hold it
``?prune=recompute&node_threshold=0.8``      circuit-tracer's pruning recomputed on the
``&edge_threshold=0.98``                     stored links (either threshold alone takes
                                             the other's default); ``prune=influence``
                                             names the other rule
``&pinned=ID,ID&clicked=ID``                 nodes kept in the view whatever the threshold
                                             (besides the file's ``qParams.pinnedIds``)
``?around=NODE_ID&top=10&depth=1``           the neighbourhood of one node;
``&direction=in|out|both``                   ``direction`` defaults to both
===========================================  ==============================================

Each answer is a download (:mod:`headgraph.api.delivery`): it takes one of the service's
download slots (503 ``SERVER_BUSY`` when none frees up within ``max_wait_s``), is written
whole into a spool by a thread of its own, and is sent from the spool with a
Content-Length once the database is let go, so a client that reads slowly or not at all
holds no database session (and is closed after ``client_timeout_s`` without progress).
``X-Headgraph-Links`` gives the number of links. Database work runs in the download's slot
(not in one of GraphQL's turns) and opens its session through ``Service.open_session``: a
view's session ends when it is computed, before it is written; the whole graph's when it
is written. A view is at most ``max_response_bytes``
(``LIMIT_EXCEEDED``); a whole graph is bounded by ``max_export_edges``. Errors use the
API's JSON error shape, cleaned as every route's are (``Service.public``: no database
path or URL, at most 1000 characters): 400 ``BAD_INPUT`` / ``GRAPH_AMBIGUOUS`` /
``LIMIT_EXCEEDED``, 404
``GRAPH_NOT_FOUND`` / ``NODE_NOT_FOUND``, 405 for a method other than GET, 503
``DATABASE_LOCKED`` / ``SERVER_BUSY`` (with ``Retry-After``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import parse_qs, unquote_to_bytes

from headgraph.api.delivery import Cancelled, Download
from headgraph.api.errors import INTERNAL_ERROR, INTERNAL_MESSAGE
from headgraph.api.execute import Outcome, Service, refusal
from headgraph.api.http import Receive, Scope, Send, raw_path, refuse_unless_get
from headgraph.api.http import respond as _respond
from headgraph.attribution import graphs as q
from headgraph.attribution import neighbourhood as near
from headgraph.attribution.export import write_graph, write_view
from headgraph.attribution.views import ViewAsk, graph_view
from headgraph.errors import (
    BadInputError,
    DatabaseLockedError,
    HeadgraphError,
    LimitExceededError,
    NodeNotFoundError,
    ServerBusyError,
)

log = logging.getLogger("headgraph.api")
PREFIX = "/graphs/"
PARAMS = ("prune", "node_threshold", "edge_threshold", "pinned", "clicked", "around", "top",
          "depth", "direction")


@dataclass(frozen=True)
class GraphAsk:
    """One checked request: the whole graph, a view or a neighbourhood."""

    slug: str
    node_threshold: float | None = None
    edge_threshold: float | None = None
    around: str | None = None
    top: int = 10
    depth: int = 1
    direction: str = "both"
    model: str | None = None
    prune: str | None = None
    pinned: tuple[str, ...] = ()
    clicked: str | None = None

    @property
    def pruned(self) -> bool:
        """Whether a view is asked for (not the whole graph)."""
        return (self.node_threshold is not None or self.edge_threshold is not None
                or self.prune is not None or bool(self.pinned) or self.clicked is not None)

    def view(self) -> ViewAsk:
        return ViewAsk(self.prune, self.node_threshold, self.edge_threshold, self.pinned,
                       self.clicked).check()


def _name(raw: bytes, what: str) -> str:
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"the {what} in the path is not UTF-8.") from None
    if not name or not name.isprintable() or ".." in name or (what == "slug" and "/" in name):
        raise BadInputError(f"{name[:80]!r} is not a graph {what}.")
    return name


def parse_ask(raw_path: bytes, query_string: bytes) -> GraphAsk:
    """``raw_path`` is the percent-encoded path after ``/graphs/``: ``{model}/{slug}.json``
    or ``{slug}.json``."""
    parts = raw_path.split(b"/")
    if not raw_path.endswith(b".json") or len(parts) > 2:
        raise BadInputError("an attribution graph is /graphs/{model}/{slug}.json (a model "
                            "name with '/' percent-encoded), or /graphs/{slug}.json.")
    model = _name(parts[0], "model") if len(parts) == 2 else None
    slug = _name(parts[-1][:-5], "slug")
    params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise BadInputError(f"unknown parameter {', '.join(unknown)}; this route takes "
                            f"{', '.join(PARAMS)}.")
    last = {k: v[-1] for k, v in params.items()}
    pinned = tuple(x for v in params.get("pinned", []) for x in _text(v).split(",") if x)
    ask = GraphAsk(slug, _share(last, "node_threshold"), _share(last, "edge_threshold"),
                   _text(last["around"]) if last.get("around") else None,
                   _int(last, "top", 10), _int(last, "depth", 1),
                   last.get("direction", "both"), model, last.get("prune") or None, pinned,
                   _text(last["clicked"]) if last.get("clicked") else None)
    if ask.around is None and any(k in last for k in ("top", "depth", "direction")):
        raise BadInputError("top, depth and direction go with around=NODE_ID.")
    if ask.around is not None and ask.pruned:
        raise BadInputError("give either view parameters (prune, thresholds, pinned, "
                            "clicked) or around= (a neighbourhood), not both.")
    if ask.around is not None:
        near.check_neighbourhood(ask.top, ask.depth, ask.direction)
    elif ask.pruned:
        ask.view()
    return ask


def _text(raw: str) -> str:
    """A query value as text: parse_qs decodes it as latin-1; the page sent UTF-8."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError("a parameter is not UTF-8.") from None


def _share(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise BadInputError(f"{name} must be a share between 0 and 1, not {raw[:40]!r}.")
    return value


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise BadInputError(f"{name} must be a positive integer, not {raw[:40]!r}.")
    return int(raw)


class AttributionRoutes:
    """The ``/graphs/`` route of :class:`headgraph.api.app.HeadgraphApp`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(PREFIX)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_get(scope, send):
            return
        raw = raw_path(scope)
        wait = self.settings.max_wait_s
        try:
            ask = parse_ask(raw[len(PREFIX):], scope.get("query_string", b""))
            async with self.service.downloads.hold(wait), Download(
                    receive, self.settings.max_response_bytes or None,
                    f"graph {ask.slug[:80]!r} in this view", producing=self.service.producing,
                    wait_s=wait, trimmer=self.service.trimmer) as download:
                try:
                    n_links = await self._produce(ask, download)
                except Cancelled:
                    return
                await download.send(send, 200, [(b"content-type", b"application/json"),
                                                (b"x-headgraph-links", str(n_links).encode())])
        except Exception as exc:  # noqa: BLE001 - every failure becomes a response
            if not isinstance(exc, HeadgraphError):
                log.error("internal error answering graph request %r", scope["path"][:256],
                          exc_info=exc)
            await _respond(send, self.service.public(self._refusal(exc)))

    async def _produce(self, ask: GraphAsk, download: Download) -> int:
        """Write the answer into the download's spool, in a thread of its own; the number
        of links. A view is computed in one session and written after it; the whole graph
        is written within its session (it reads as it writes). The session is the
        download slot's, as an export's is: GraphQL's database turns stay free."""
        found = await download.produce(self._prepare, ask)
        if isinstance(found, q.GraphRow):
            download.spool.limit = None  # max_export_edges bounds a whole graph
            await download.produce(self._write_whole, ask, download.spool)
            return found.n_links
        await download.produce(write_view, found, download.spool)
        return found.links.num_rows

    def _prepare(self, ask: GraphAsk) -> q.GraphSlice | q.GraphRow:
        """The view asked for, computed (the session closes before it is written), or
        the whole graph's row once its size is checked."""
        with self.service.open_session() as db:
            if ask.around is not None:
                return near.neighbourhood(db, ask.slug, ask.around, top=ask.top,
                                          depth=ask.depth, direction=ask.direction,
                                          max_links=self.settings.max_export_edges,
                                          model=ask.model)
            if ask.pruned:
                return graph_view(db, ask.slug, ask.view(), model=ask.model,
                                  max_links=self.settings.max_export_edges)
            graph = q.get_graph(db, ask.slug, ask.model)
            self._check_size(graph)
            return graph

    def _write_whole(self, ask: GraphAsk, out: TextIO) -> None:
        with self.service.open_session() as db:
            write_graph(db, ask.slug, out, ask.model)

    def _check_size(self, graph: q.GraphRow) -> None:
        limit = self.settings.max_export_edges
        if graph.n_links > limit:
            raise LimitExceededError(
                f"graph {graph.name!r} has {graph.n_links:,} links, over this server's limit "
                f"of {limit:,} (max_export_edges). Ask for a pruned view (node_threshold=, "
                "prune=) or a neighbourhood (around=).")

    def _refusal(self, exc: BaseException) -> Outcome:
        if not isinstance(exc, HeadgraphError):  # a bug, logged with its traceback
            return Outcome(500, {"errors": [{"message": INTERNAL_MESSAGE,
                                             "extensions": {"code": INTERNAL_ERROR}}]})
        if isinstance(exc, DatabaseLockedError | ServerBusyError):
            return self.service.busy(exc)
        if isinstance(exc, q.GraphNotFoundError | NodeNotFoundError):
            return refusal(exc, 404)
        if isinstance(exc, BadInputError | LimitExceededError):
            return refusal(exc, 400)
        return refusal(exc, 500)
