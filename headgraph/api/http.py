"""The ASGI plumbing every route shares: types, JSON and byte responses, disconnects."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from headgraph.api.execute import Outcome
    from headgraph.api.streaming import Channel

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


async def send_json(send: Send, status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, json.dumps(body, default=str).encode(), "application/json",
                     headers)


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


async def watch_disconnect(receive: Receive, channel: Channel) -> None:
    """Cancel a streaming ``channel`` when the client goes away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            channel.cancel()
            return
