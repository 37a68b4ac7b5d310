"""The server's settings, declared in one table (name, default, help).

Every limit the API enforces is here, so ``headgraph serve --setting NAME=VALUE``, the
Python ``serve(db, **settings)``, ``headgraph query`` and the docs all read the same
list. All settings are non-negative integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from headgraph.errors import BadInputError


@dataclass(frozen=True)
class Setting:
    """One documented setting."""

    name: str
    default: int
    help: str


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
    Setting("max_body_bytes", 100_000, "Largest HTTP request body, in bytes."),
    Setting("retry_after_s", 1,
            "Seconds a client is told to wait (Retry-After) when the database is locked."),
    Setting("max_circuit_edges", 5000,
            "Most edges `Node.circuit` (and an export's `circuit=`) returns; the strongest are "
            "kept and `truncated` says so."),
    Setting("max_export_edges", 5_000_000,
            "Most edges one `/export/...` download may hold; a larger export is refused "
            "(LIMIT_EXCEEDED) before anything is sent."),
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
    max_body_bytes: int = 100_000
    retry_after_s: int = 1
    max_circuit_edges: int = 5000
    max_export_edges: int = 5_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadInputError(f"setting {f.name} must be a non-negative integer, "
                                    f"not {value!r}.")

    @classmethod
    def of(cls, values: Mapping[str, object] | None = None) -> Settings:
        """Settings from ``{name: value}`` (ints or decimal strings); unknown names refused."""
        known = {s.name for s in SETTINGS}
        parsed: dict[str, int] = {}
        for name, value in (values or {}).items():
            if name not in known:
                raise BadInputError(f"unknown setting {name!r}; settings are "
                                    f"{', '.join(sorted(known))}.")
            parsed[name] = _as_int(name, value)
        return cls(**parsed)


def _as_int(name: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        return int(value)
    raise BadInputError(f"setting {name} must be a non-negative integer, not {value!r}.")


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
    return "\n".join(f"{s.name} (default {s.default}): {s.help}" for s in SETTINGS)
