"""The server's settings, declared in one table (name, default, help).

Every limit and switch the API has is here, so ``headgraph serve --setting NAME=VALUE``,
the Python ``serve(db, **settings)``, ``headgraph query`` and the docs (README.md,
"Server settings"; a test checks that every name is there) all read the same list. Most
settings are non-negative integers; ``max_query_seconds`` and the ``*_s`` ones are
numbers of seconds, ``cors_origins`` and ``allowed_hosts`` comma-separated lists,
``auth_token`` a string, ``log_queries`` a boolean. The defaults are the safe ones: no
CORS headers, no token needed (the server binds 127.0.0.1), loopback Host names only, no
query text in the logs, and every wait on a client or a database turn bounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from headgraph.errors import BadInputError

SettingValue = int | float | bool | str | tuple[str, ...] | None
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Setting:
    """One documented setting."""

    name: str
    default: SettingValue
    help: str

    @property
    def shown(self) -> str:
        """The default as a person would write it (``none`` for no value)."""
        return shown(self.default)


def shown(value: SettingValue) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("max_depth", 10,
            "Deepest nesting of fields a query may have (introspection fields not counted)."),
    Setting("max_aliases", 30, "Most aliased fields in one query document."),
    Setting("max_tokens", 2000, "Most lexical tokens in one query document."),
    Setting("max_first", 1000, "Largest `top` or `first` any list field accepts."),
    Setting("default_first", 100,
            "Page size of `Model.edges` when `first` is omitted (at most max_first)."),
    Setting("max_rows", 100_000,
            "Most rows one request may read from the database, all fields together."),
    Setting("max_cost", 100_000,
            "Largest cost a GraphQL query may have: the number of values its answer could "
            "hold, each field counted once times the sizes of the lists above it (`top`, "
            "`first`, or default_first for a list without them), fragments expanded. Over "
            "it, the query is refused (LIMIT_EXCEEDED, with the estimate) before anything "
            "runs; 0 turns the check off."),
    Setting("max_response_bytes", 20_000_000,
            "Largest GraphQL answer (and /graphs view), in bytes of JSON; a larger one is "
            "replaced by a LIMIT_EXCEEDED error. Downloads of whole graphs are bounded by "
            "max_export_edges instead."),
    Setting("max_body_bytes", 100_000, "Largest HTTP request body, in bytes."),
    Setting("retry_after_s", 1,
            "Seconds a client is told to wait (Retry-After) when the database is locked."),
    Setting("max_circuit_edges", 5000,
            "Most edges `Node.circuit` (and an export's `circuit=`) returns; the strongest are "
            "kept and `truncated` says so."),
    Setting("max_export_edges", 5_000_000,
            "Most edges one `/export/...` download may hold; a larger export is refused "
            "(LIMIT_EXCEEDED) before anything is sent."),
    Setting("max_query_seconds", 30.0,
            "Longest one GraphQL request may run, in seconds: work still running then (a "
            "path search, a circuit, a comparison, a database read) is abandoned, its "
            "fields and every later one answer LIMIT_EXCEEDED, and the response leaves at "
            "once; 0 turns the limit off."),
    Setting("max_wait_s", 10.0,
            "Longest a request waits for one of the server's database turns (or an "
            "export's slot) before it is answered 503 SERVER_BUSY with Retry-After; a "
            "GraphQL request waits at most its max_query_seconds."),
    Setting("client_timeout_s", 10.0,
            "Longest the server waits on a client: for a whole request (headers and body) "
            "after its first byte, and for a client to take any of its answer. A connection "
            "that stalls longer is closed (a slow or non-reading client holds nothing)."),
    Setting("keep_alive_s", 5.0,
            "How long an idle keep-alive connection stays open between requests."),
    Setting("max_connections", 512,
            "Most open client connections, kept 64 under the process's file limit; at the "
            "cap a new connection replaces the idlest one, or gets 503 SERVER_BUSY when "
            "none is idle."),
    Setting("allowed_hosts", (),
            "Host names (or addresses) the server answers to besides the loopback names "
            "(localhost, 127.0.0.1, [::1]) and the address it listens on, comma-separated; "
            "* for any. A request naming another Host is refused (421): a web page cannot "
            "reach a loopback server through DNS rebinding."),
    Setting("cors_origins", (),
            "Browser origins allowed to call the API from another origin, comma-separated "
            "(https://lab.example.org,http://localhost:3000; * for any). Empty (the "
            "default): no Access-Control-* headers and no preflight answers."),
    Setting("auth_token", None,
            "A bearer token (at least 16 printable characters, no spaces) that every route "
            "but /healthz then requires as `Authorization: Bearer <token>` (401 "
            "UNAUTHENTICATED otherwise); also `--auth-token` or $HEADGRAPH_AUTH_TOKEN."),
    Setting("log_queries", False,
            "Add each GraphQL request's query text, operation name and variables (cut at 4 "
            "KB) to its request-log line; off by default, when a line has only method, "
            "path, status and duration."),
)


@dataclass(frozen=True)
class Settings:
    """Values for :data:`SETTINGS`; build with :meth:`of` to check names and values."""

    max_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_first: int = 1000
    default_first: int = 100
    max_rows: int = 100_000
    max_cost: int = 100_000
    max_response_bytes: int = 20_000_000
    max_body_bytes: int = 100_000
    retry_after_s: int = 1
    max_circuit_edges: int = 5000
    max_export_edges: int = 5_000_000
    max_query_seconds: float = 30.0
    max_wait_s: float = 10.0
    client_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    auth_token: str | None = field(default=None, repr=False)  # never printed
    log_queries: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in _PARSERS and (isinstance(value, bool) or not isinstance(value, int)
                                           or value < 0):
                raise BadInputError(f"setting {f.name} must be a non-negative integer, "
                                    f"not {value!r}.")
        for name in SECONDS:
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                    or not math.isfinite(seconds) or seconds < 0:
                raise BadInputError(f"setting {name} must be a non-negative number of "
                                    f"seconds, not {seconds!r}.")
        for name in ("client_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise BadInputError(f"setting {name} must be more than 0 seconds.")
        if not isinstance(self.allowed_hosts, tuple) or not all(
                isinstance(h, str) and _is_host(h) for h in self.allowed_hosts):
            raise BadInputError("setting allowed_hosts must list host names or addresses "
                                "such as lab.example.org or 10.0.0.5 (no scheme, port or "
                                f"path), or *; not {self.allowed_hosts!r}.")
        if not isinstance(self.log_queries, bool):
            raise BadInputError(f"setting log_queries must be true or false, not "
                                f"{self.log_queries!r}.")
        if not isinstance(self.cors_origins, tuple) or not all(
                isinstance(o, str) and _is_origin(o) for o in self.cors_origins):
            raise BadInputError("setting cors_origins must list origins such as "
                                "https://lab.example.org or http://localhost:3000 (scheme, "
                                f"host, optional port; no path), or *; not {self.cors_origins!r}.")
        token = self.auth_token
        if token is not None and not (isinstance(token, str) and len(token) >= MIN_TOKEN_CHARS
                                      and all(33 <= ord(c) <= 126 for c in token)):
            raise BadInputError(f"setting auth_token must be at least {MIN_TOKEN_CHARS} "
                                "printable ASCII characters without spaces (e.g. `python -c "
                                "'import secrets; print(secrets.token_urlsafe(32))'`).")

    @classmethod
    def of(cls, values: Mapping[str, object] | None = None) -> Settings:
        """Settings from ``{name: value}`` (values of their type, or strings as the CLI
        gives them); unknown names refused."""
        known = {s.name for s in SETTINGS}
        parsed: dict[str, object] = {}
        for name, value in (values or {}).items():
            if name not in known:
                raise BadInputError(f"unknown setting {name!r}; settings are "
                                    f"{', '.join(sorted(known))}.")
            parsed[name] = _PARSERS.get(name, _as_int)(name, value)
        return cls(**parsed)  # type: ignore[arg-type]


def _as_int(name: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        return int(value)
    raise BadInputError(f"setting {name} must be a non-negative integer, not {value!r}.")


def _as_seconds(name: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise BadInputError(f"setting {name} must be a number of seconds, not {value!r}.")


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise BadInputError(f"setting {name} must be true or false, not {value!r}.")


def _as_origins(name: str, value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise BadInputError(f"setting {name} must be a comma-separated list, not {value!r}.")
    return tuple(dict.fromkeys(str(o).strip().rstrip("/") for o in items if str(o).strip()))


def _as_token(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInputError(f"setting {name} must be a string.")
    return value


def _as_hosts(name: str, value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise BadInputError(f"setting {name} must be a comma-separated list, not {value!r}.")
    return tuple(dict.fromkeys(str(h).strip().lower() for h in items if str(h).strip()))


def _is_host(host: str) -> bool:
    """A host name, an IPv4 address or a bracketed IPv6 address (what a Host header holds
    before its port), or ``*``."""
    if host == "*":
        return True
    if host.startswith("[") and host.endswith("]"):
        return len(host) > 2 and all(c in "0123456789abcdef:." for c in host[1:-1])
    return bool(host) and len(host) <= 253 and all(c.isalnum() or c in "-._" for c in host) \
        and host.isascii()


def _is_origin(origin: str) -> bool:
    if origin == "*":
        return True
    scheme, sep, rest = origin.partition("://")
    return (scheme in ("http", "https") and bool(sep) and bool(rest)
            and not any(c in rest for c in "/?#@ \\") and rest.isascii())


SECONDS = ("max_query_seconds", "max_wait_s", "client_timeout_s", "keep_alive_s")
_PARSERS = {**{name: _as_seconds for name in SECONDS}, "log_queries": _as_bool,
            "cors_origins": _as_origins, "allowed_hosts": _as_hosts, "auth_token": _as_token}


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["max_depth=12", ...]`` as a dict; :class:`BadInputError` for a pair without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInputError(f"expected NAME=VALUE, got {pair!r}.")
        out[name.strip()] = value.strip()
    return out


def settings_help() -> str:
    """The settings table as text, for ``--help``."""
    return "\n".join(f"{s.name} (default {s.shown}): {s.help}" for s in SETTINGS)
