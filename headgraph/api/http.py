"""The ASGI plumbing every route shares: types, JSON and byte responses, disconnects.

JSON leaves as JSON: a number that is not finite (NaN, Infinity: stored by an older
import, or in a graph's own metadata) is written ``null``, as JavaScript's
``JSON.stringify`` does, never the bare ``NaN`` that Python's encoder writes and no JSON
parser reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from headgraph.api.execute import Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_bytes(send: Send, status: int, body: bytes, content_type: str,
                     headers: dict[str, str] | None = None) -> None:
    """One complete response with a known length."""
    raw = [(b"content-type", content_type.encode()),
           (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def encode_json(body: Any) -> bytes:
    """``body`` as UTF-8 JSON, non-finite numbers as ``null`` (see the module doc)."""
    try:
        return json.dumps(body, default=str, allow_nan=False).encode()
    except ValueError:  # a NaN or an infinity somewhere: rare, so walk only then
        return json.dumps(finite(body), default=str, allow_nan=False).encode()


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (walked without
    recursion: the nesting is the data's)."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        holder, key = stack.pop()
        item = holder[key]
        if isinstance(item, float) and not math.isfinite(item):
            holder[key] = None
        elif isinstance(item, dict):
            copy = dict(item)
            holder[key] = copy
            stack.extend((copy, k) for k in copy)
        elif isinstance(item, list | tuple):
            copy = list(item)
            holder[key] = copy
            stack.extend((copy, i) for i in range(len(copy)))
    return root[0]


async def send_json(send: Send, status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, encode_json(body), "application/json", headers)


async def respond(send: Send, outcome: Outcome) -> None:
    """Send an :class:`~headgraph.api.execute.Outcome` (status, JSON body, headers)."""
    await send_json(send, outcome.status, outcome.body, outcome.headers)


async def refuse_unless_get(scope: Scope, send: Send) -> bool:
    """Answer 405 (``Allow: GET``) to anything but GET; whether it did."""
    if scope["method"] == "GET":
        return False
    from headgraph.api.execute import refusal
    from headgraph.errors import BadInputError

    await respond(send, refusal(BadInputError(
        f"{scope['method']} is not allowed on {scope['path']}; use GET."), 405, {"Allow": "GET"}))
    return True


def raw_path(scope: Scope) -> bytes:
    """The request's path as the client sent it (percent-encoding kept), without a query."""
    return (scope.get("raw_path") or quote(scope["path"]).encode()).split(b"?", 1)[0]
