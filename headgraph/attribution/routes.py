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

The body streams in ~64 KB chunks from a thread of its own (:mod:`headgraph.api.streaming`;
a slow client holds no worker thread of the event loop); ``X-Headgraph-Links`` gives the
number of links. Database work waits for one of the connection turns every route shares
(:meth:`Service.session_gate <headgraph.api.execute.Service.session_gate>`) and opens its
session through ``Service.open_session``: a view holds its turn while it is computed and
streams from memory after; the whole graph holds it while it streams. Errors use the API's
JSON error shape, cleaned as every route's are (``Service.public``: no database path or URL,
at most 1000 characters): 400 ``BAD_INPUT`` / ``GRAPH_AMBIGUOUS`` / ``LIMIT_EXCEEDED``, 404
``GRAPH_NOT_FOUND`` / ``NODE_NOT_FOUND``, 405 for a method other than GET, 503
``DATABASE_LOCKED`` (with ``Retry-After``) while an import writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote_to_bytes

from headgraph.api.errors import INTERNAL_ERROR, INTERNAL_MESSAGE
from headgraph.api.execute import Outcome, Service, refusal
from headgraph.api.http import Receive, Scope, Send, raw_path, refuse_unless_get
from headgraph.api.http import respond as _respond
from headgraph.api.http import watch_disconnect as _watch_disconnect
from headgraph.api.streaming import Cancelled, Channel, ChunkWriter
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
        try:
            ask = parse_ask(raw[len(PREFIX):], scope.get("query_string", b""))
            async with self.service.session_gate():
                found = await asyncio.to_thread(self._prepare, ask)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a response
            if not isinstance(exc, HeadgraphError):
                log.error("internal error answering graph request %r", scope["path"][:256],
                          exc_info=exc)
            await _respond(send, self.service.public(self._refusal(exc)))
            return
        if isinstance(found, q.GraphSlice):
            view = found

            def write(out: ChunkWriter, start: Callable[[], None]) -> None:
                start()
                write_view(view, out)

            await self._stream(receive, send, ask, found.links.num_rows, write)
            return
        async with self.service.session_gate():  # the whole graph reads while it streams
            await self._stream(receive, send, ask, found.n_links,
                               lambda out, start: self._write_whole(ask, out, start))

    def _prepare(self, ask: GraphAsk) -> q.GraphSlice | q.GraphRow:
        """The view asked for, computed (the session closes before it streams), or the
        whole graph's row once its size is checked."""
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

    def _write_whole(self, ask: GraphAsk, out: ChunkWriter, start: Callable[[], None]) -> None:
        with self.service.open_session() as db:
            start()
            write_graph(db, ask.slug, out, ask.model)

    async def _stream(self, receive: Receive, send: Send, ask: GraphAsk, n_links: int,
                      write: Callable[[ChunkWriter, Callable[[], None]], None]) -> None:
        """Run ``write`` in a thread of its own and send what it writes as it comes; it
        calls ``start`` when the response can begin (an error before that is a refusal,
        one after it a broken transfer)."""
        channel = Channel(asyncio.get_running_loop())
        threading.Thread(target=self._write, args=(channel, ask, n_links, write),
                         name=f"headgraph-graph-{ask.slug[:40]}", daemon=True).start()
        watcher = asyncio.create_task(_watch_disconnect(receive, channel))
        try:
            first = await channel.get()
            if first[0] == "cancelled":
                return
            if first[0] != "start":
                await _respond(send, self.service.public(self._refusal(first[1])))
                return
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"x-headgraph-links", str(first[1]).encode())]})
            while True:
                item = await channel.get()
                if item[0] == "data":
                    await send({"type": "http.response.body", "body": item[1],
                                "more_body": True})
                elif item[0] == "end":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                else:  # cancelled, or failed after the headers left: no final chunk, so
                    if item[0] != "cancelled":  # the client sees a broken transfer
                        log.error("graph %r failed mid-stream: %s", ask.slug, item[1])
                    return
        finally:  # the writer stops at its next chunk (it sends a last item either way)
            channel.cancel()
            watcher.cancel()

    @staticmethod
    def _write(channel: Channel, ask: GraphAsk, n_links: int,
               write: Callable[[ChunkWriter, Callable[[], None]], None]) -> None:
        try:
            writer = ChunkWriter(channel)
            write(writer, lambda: channel.put(("start", n_links)))
            writer.flush()
            _finish(channel, ("end", None))
        except Cancelled:
            _finish(channel, ("cancelled", None))
        except HeadgraphError as exc:
            _finish(channel, ("error", exc))
        except Exception as exc:
            log.exception("internal error writing graph %r", ask.slug)
            _finish(channel, ("bug", exc))

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
        if isinstance(exc, DatabaseLockedError):
            return refusal(exc, 503, {"Retry-After": str(self.settings.retry_after_s)})
        if isinstance(exc, q.GraphNotFoundError | NodeNotFoundError):
            return refusal(exc, 404)
        if isinstance(exc, BadInputError | LimitExceededError):
            return refusal(exc, 400)
        return refusal(exc, 500)


def _finish(channel: Channel, item: tuple) -> None:
    try:
        channel.close(item)
    except Exception:  # noqa: BLE001 - the loop is gone; nobody is listening
        pass
