"""HTTP routes for visualization clients: graph exports (spooled, then sent) and PNG plots.

==============================================  ============================================
route                                           answer
==============================================  ============================================
``GET /export/{model}.{json|cyjs|graphml|dot}``  the model's graph (:mod:`headgraph.graph.export`),
                                                written whole, then sent in 64 KB chunks with
                                                its ``Content-Length`` and
                                                ``Content-Disposition: attachment``
``GET /plot/{model}/composition.png?kind=K``    head x head heatmap of Q, K or V composition
``GET /plot/{model}/copying.png``               every head's OV copying ratio
``GET /plot/series.png?family=...``             a checkpoint series (node= or source=,
                                                target=, kind=; metric=)
==============================================  ============================================

Export filters are query parameters: ``kinds=Q,K`` (default Q,K,V), ``min_score=0.2``,
``top_per_target=3``, ``circuit=L1H2&depth=2`` (only that node's upstream circuit; at most
``max_circuit_edges`` edges, ``X-Headgraph-Truncated: true`` when the cap cut). The number
of edges is counted first and sent as ``X-Headgraph-Edges``; more than ``max_export_edges``
is refused with ``LIMIT_EXCEEDED`` before anything is sent. Unknown parameters are refused.

Model names may hold ``:`` and ``@`` (``random:gpt2-small``, ``toy@1400``), raw or
percent-encoded; a name that decodes to something path-like (``/``, ``\\``, ``..``, NUL or
another control character) is refused with 400 ``BAD_INPUT``.

Errors use the API's one JSON shape ``{"errors": [{"message", "extensions": {"code"}}]}``:
400 ``BAD_INPUT`` / ``LIMIT_EXCEEDED``, 404 ``MODEL_NOT_FOUND`` / ``NODE_NOT_FOUND`` (and
``BAD_INPUT`` for an unknown route), 405 for a method other than GET, 503 + ``Retry-After``
``DATABASE_LOCKED`` while an ingest writes, 503 + ``Retry-After`` ``SERVER_BUSY`` when no
download slot frees up within ``max_wait_s``. An export is written whole into a spool
(memory, then a temporary file) while it holds the database (read-only), and sent from
the spool after the database is let go (:mod:`headgraph.api.delivery`): a client that
reads slowly, or not at all, never holds the database, and is closed after
``client_timeout_s`` without progress.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import parse_qs, quote, unquote_to_bytes

from sqlalchemy import and_, func, select

from headgraph.api.delivery import Cancelled, Download
from headgraph.api.errors import INTERNAL_ERROR, INTERNAL_MESSAGE
from headgraph.api.execute import Outcome, Service, refusal
from headgraph.api.graph_ops import COMPOSITION_KINDS, circuit_of, family_series
from headgraph.api.http import Receive, Scope, Send, raw_path, refuse_unless_get
from headgraph.api.http import respond as _respond
from headgraph.api.limits import NUL_MESSAGE, unsafe_string
from headgraph.api.settings import Settings
from headgraph.api.turns import Turns
from headgraph.errors import (
    BadInputError,
    DatabaseLockedError,
    HeadgraphError,
    LimitExceededError,
    ModelNotFoundError,
    NodeNotFoundError,
    ServerBusyError,
)
from headgraph.queries.models import get_model
from headgraph.queries.nodes import check_kind
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import edges, score_at_least

log = logging.getLogger("headgraph.api")

PREFIXES = ("/export/", "/plot/")
CONTENT_TYPES = {
    "json": "application/json",
    "cyjs": "application/json",
    "graphml": "application/graphml+xml; charset=utf-8",
    "dot": "text/vnd.graphviz; charset=utf-8",
}
EXPORT_PARAMS = ("kinds", "min_score", "top_per_target", "circuit", "depth")
PLOTS = {"composition.png": ("kind",), "copying.png": ()}
SERIES_PARAMS = ("family", "node", "source", "target", "kind", "metric")
_PLOT_LOCK = threading.Lock()  # pyplot keeps global state: draw one figure at a time


class NoSuchRoute(LookupError):
    """A path under a known prefix that names no route (404)."""


@dataclass(frozen=True)
class ExportAsk:
    """One export request, checked."""

    model: str
    fmt: str
    kinds: tuple[str, ...] = COMPOSITION_KINDS
    min_score: float | None = None
    top_per_target: int | None = None
    circuit: str | None = None
    depth: int = 2

    @property
    def filename(self) -> str:
        stem = self.model if self.circuit is None else f"{self.model}.circuit-{self.circuit}"
        return f"{stem}.{self.fmt}"


@dataclass(frozen=True)
class PlotAsk:
    """One plot request, checked: ``plot`` is composition, copying or series."""

    plot: str
    model: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        return dict(self.params).get(name)


# --- parsing ----------------------------------------------------------------------------

def model_name(raw: bytes) -> str:
    """A model name from one raw (percent-encoded) path segment; refuses path-like names."""
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError("the model name in the path is not UTF-8.") from None
    if not name:
        raise BadInputError("the path names no model.")
    if ("/" in name or "\\" in name or ".." in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise BadInputError(f"{name[:80]!r} is not a model name: names cannot contain '/', "
                            "'\\', '..' or control characters.")
    return name


def _params(scope: Scope, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadInputError(f"unknown parameter {', '.join(unknown)}; this route takes "
                            f"{', '.join(allowed) or 'no parameters'}.")
    if any(unsafe_string(v) for values in params.values() for v in values):
        raise BadInputError(f"parameters: {NUL_MESSAGE}")
    return params


def _last(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _float(params: dict[str, list[str]], name: str) -> float | None:
    raw = _last(params, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadInputError(f"{name} must be a finite number, not {raw[:40]!r}.")
    return value


def _int(params: dict[str, list[str]], name: str, minimum: int) -> int | None:
    raw = _last(params, name)
    if raw is None:
        return None
    if not raw.strip().isdigit() or int(raw) < minimum:
        raise BadInputError(f"{name} must be an integer >= {minimum}, not {raw[:40]!r}.")
    return int(raw)


def _kinds(params: dict[str, list[str]]) -> tuple[str, ...]:
    if "kinds" not in params:
        return COMPOSITION_KINDS
    kinds = [k.strip().upper() for v in params["kinds"] for k in v.split(",") if k.strip()]
    if not kinds:
        raise BadInputError("kinds is empty; give edge kinds such as kinds=Q,K or leave it "
                            "out (Q,K,V).")
    return tuple(dict.fromkeys(check_kind(k) for k in kinds))


def parse_export(rest: bytes, scope: Scope) -> ExportAsk:
    """``rest`` is the raw path after ``/export/``: ``{model}.{format}``."""
    if b"/" in rest:
        raise BadInputError("an export is /export/{model}.{format}; a model name cannot "
                            "contain '/'.")
    stem, dot, fmt = rest.rpartition(b".")
    if not dot or fmt.decode("latin-1") not in CONTENT_TYPES:
        raise BadInputError(f"an export is /export/{{model}}.{{format}} with format one of "
                            f"{', '.join(CONTENT_TYPES)}.")
    name = model_name(stem)
    params = _params(scope, EXPORT_PARAMS)
    circuit = _last(params, "circuit")
    depth = _int(params, "depth", 1)
    if depth is not None and circuit is None:
        raise BadInputError("depth applies to a circuit export; give circuit=NODE too.")
    if circuit is not None and not circuit:
        raise BadInputError("circuit is empty; give a node name such as circuit=L1H2.")
    return ExportAsk(model=name, fmt=fmt.decode("latin-1"), kinds=_kinds(params),
                     min_score=_float(params, "min_score"),
                     top_per_target=_int(params, "top_per_target", 1), circuit=circuit,
                     depth=2 if depth is None else depth)


def parse_plot(rest: bytes, scope: Scope) -> PlotAsk:
    """``rest`` is the raw path after ``/plot/``: ``series.png`` or ``{model}/{plot}.png``."""
    if rest == b"series.png":
        params = _params(scope, SERIES_PARAMS)
        if not _last(params, "family"):
            raise BadInputError("a series plot needs family=NAME (and node= or source=, "
                                "target=, kind=).")
        return PlotAsk("series", None, tuple((k, v[-1]) for k, v in params.items()))
    model, slash, plot = rest.rpartition(b"/")
    plot_name = plot.decode("latin-1")
    if not slash or plot_name not in PLOTS:
        raise NoSuchRoute("no such plot; plots are /plot/{model}/composition.png, "
                          "/plot/{model}/copying.png and /plot/series.png.")
    if b"/" in model:
        raise BadInputError("a model name cannot contain '/'.")
    name = model_name(model)
    params = _params(scope, PLOTS[plot_name])
    return PlotAsk(plot_name.removesuffix(".png"), name,
                   tuple((k, v[-1]) for k, v in params.items()))


# --- work in a worker thread -----------------------------------------------------------

def count_export_edges(db: GraphDB, model: ModelRow, kinds: tuple[str, ...],
                       min_score: float | None, top_per_target: int | None) -> int:
    """How many edges an export with these filters holds (the conditions of
    :func:`headgraph.graph.export.edge_batches`)."""
    c = edges.c
    cond = [c.model_id == model.model_id, c.kind.in_(kinds)]
    if min_score is not None:
        cond.append(score_at_least(min_score))
    if top_per_target is not None:
        cond.append(c.rank <= top_per_target)
    stmt = select(func.count().label("n")).select_from(edges).where(and_(*cond))
    return int(db.rows(stmt)[0]["n"])


@dataclass(frozen=True)
class ExportStart:
    """What the producer knows once the export is written: its size and whether a cap
    cut it."""

    n_edges: int
    truncated: bool


class ExportRoutes:
    """The ``/export/`` and ``/plot/`` routes of :class:`headgraph.api.app.HeadgraphApp`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        # exports share the service's download slots with the /graphs routes; plots are
        # short but drawn one at a time (pyplot), and the wait for that turn is bounded
        self._plot_turn = Turns(1, "plot turn")

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_get(scope, send):
            return
        raw = raw_path(scope)
        try:
            if raw.startswith(b"/export/"):
                await self._export(parse_export(raw[len(b"/export/"):], scope), receive, send)
            else:
                await self._plot(parse_plot(raw[len(b"/plot/"):], scope), send)
        except BadInputError as exc:
            await _respond(send, refusal(exc, 400))
        except NoSuchRoute as exc:
            await _respond(send, refusal(BadInputError(str(exc)), 404))

    # exports ----------------------------------------------------------------------------

    async def _export(self, ask: ExportAsk, receive: Receive, send: Send) -> None:
        try:
            async with self.service.downloads.hold(self.settings.max_wait_s), \
                    Download(receive, producing=self.service.producing,
                             wait_s=self.settings.max_wait_s,
                             trimmer=self.service.trimmer) as download:
                try:
                    start = await download.produce(self._write_export, ask, download.spool)
                except Cancelled:
                    return
                except Exception as exc:  # noqa: BLE001 - every failure becomes a response
                    if not isinstance(exc, HeadgraphError):
                        log.error("internal error exporting %r", ask.model, exc_info=exc)
                    await _respond(send, self.service.public(_refusal_for(exc,
                                                                          self.settings)))
                    return
                await download.send(send, 200, [
                    (b"content-type", CONTENT_TYPES[ask.fmt].encode()),
                    (b"content-disposition", _disposition(ask.filename)),
                    (b"x-headgraph-edges", str(start.n_edges).encode()),
                    (b"x-headgraph-truncated", b"true" if start.truncated else b"false")])
        except ServerBusyError as exc:
            await _respond(send, self.service.busy(exc))

    def _write_export(self, ask: ExportAsk, out: TextIO) -> ExportStart:
        """Write the export into ``out`` (a worker thread; the session closes at the end)."""
        from headgraph.graph.export import ExportFilter, write_export

        with self.service.open_session(max_rows=self.settings.max_rows) as db:
            model = get_model(db, ask.model)
            flt = ExportFilter(kinds=ask.kinds, min_score=ask.min_score,
                               top_per_target=ask.top_per_target)
            truncated = False
            if ask.circuit is not None:
                circuit = circuit_of(db, model, ask.circuit, depth=ask.depth,
                                     kinds=ask.kinds, min_score=ask.min_score,
                                     top_per_target=ask.top_per_target,
                                     max_edges=self.settings.max_circuit_edges)
                keys = frozenset((e.source, e.target, e.kind) for e in circuit.edges)
                flt = ExportFilter(kinds=ask.kinds, min_score=ask.min_score,
                                   top_per_target=ask.top_per_target, edge_keys=keys)
                n, truncated = len(keys), circuit.truncated
            else:
                n = count_export_edges(db, model, ask.kinds, ask.min_score,
                                       ask.top_per_target)
            limit = self.settings.max_export_edges
            if n > limit:
                raise LimitExceededError(
                    f"this export holds {n:,} edges, over this server's limit of "
                    f"{limit:,} (max_export_edges). Narrow it with kinds=, min_score=, "
                    "top_per_target= or circuit=, or use `headgraph export` locally.")
            write_export(db, model.name, ask.fmt, out, flt)
        return ExportStart(n, truncated)

    # plots ------------------------------------------------------------------------------

    async def _plot(self, ask: PlotAsk, send: Send) -> None:
        wait = self.settings.max_wait_s
        try:
            async with self._plot_turn.hold(wait), self.service.session_gate(wait):
                png = await asyncio.to_thread(self._draw, ask)
        except HeadgraphError as exc:
            await _respond(send, self.service.public(_refusal_for(exc, self.settings)))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"image/png"), (b"content-length", str(len(png)).encode())]})
        await send({"type": "http.response.body", "body": png})

    def _draw(self, ask: PlotAsk) -> bytes:
        from headgraph.graph.plot import (
            composition_heatmap,
            copying_chart,
            series_chart,
            series_label,
        )

        with _PLOT_LOCK, self.service.open_session(max_rows=self.settings.max_rows) as db:
            if ask.plot == "composition":
                return composition_heatmap(db, ask.model, (ask.get("kind") or "K").upper())
            if ask.plot == "copying":
                return copying_chart(db, ask.model)
            kind = ask.get("kind")
            points = family_series(db, ask.get("family"), node=ask.get("node"),
                                   source=ask.get("source"), target=ask.get("target"),
                                   kind=kind.upper() if kind else None,
                                   metric=ask.get("metric"))
            what = series_label(ask.get("node"), ask.get("source"), ask.get("target"),
                                (kind or "").upper() or None, ask.get("metric"))
            return series_chart(points, what, ask.get("family"))


# --- responses --------------------------------------------------------------------------

def _status(exc: BaseException) -> int:
    if isinstance(exc, DatabaseLockedError | ServerBusyError):
        return 503
    if isinstance(exc, ModelNotFoundError | NodeNotFoundError):
        return 404
    if isinstance(exc, BadInputError | LimitExceededError):
        return 400
    return 500


def _refusal_for(exc: BaseException, settings: Settings) -> Outcome:
    if not isinstance(exc, HeadgraphError):  # a bug, already logged with its traceback
        return Outcome(500, {"errors": [{"message": INTERNAL_MESSAGE,
                                         "extensions": {"code": INTERNAL_ERROR}}]})
    status = _status(exc)
    headers = {"Retry-After": str(settings.retry_after_s)} if status == 503 else None
    return refusal(exc, status, headers)


def _disposition(filename: str) -> bytes:
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-@") else "_"
                         for c in filename)
    return (f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}").encode("latin-1")


