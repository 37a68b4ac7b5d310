"""Who is asking: the ``Host`` a request names, and the site a browser says sent it.

**DNS rebinding.** A page at ``http://attacker.example`` can make its own name resolve to
127.0.0.1 and then read a loopback server as if it were same-origin: the browser sends
``Host: attacker.example``. :func:`host_allowed` accepts only the loopback names, the
address the client connected to (so ``http://10.0.0.5:8000`` works on a server bound to
0.0.0.0) and ``allowed_hosts``.

**Cross-site GETs.** A page of any site can make a browser send a GET (an ``<img>``, a
link, ``fetch`` in ``no-cors`` mode) without a CORS preflight: it cannot read the answer,
but the server does the work. Browsers name the sender in ``Sec-Fetch-Site`` (and, for
CORS requests, ``Origin``); :func:`cross_site` flags a request that another site sent,
unless ``cors_origins`` allows that origin or it carries ``Content-Type:
application/json``, which a page can send only after a preflight that the server answers
(the rule Apollo Server's CSRF prevention uses). Requests without these headers (curl,
scripts, older browsers) are not browsers' cross-site requests and pass.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
JSON_TYPE = "application/json"


def _header(scope: dict[str, Any] | Any, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def host_name(host: str) -> str:
    """The name of a ``Host`` header without its port, lower case (``[::1]`` kept
    bracketed).

    Examples
    --------
    >>> host_name("LocalHost:8000"), host_name("[::1]:80"), host_name("10.0.0.5")
    ('localhost', '[::1]', '10.0.0.5')
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    name, colon, port = host.rpartition(":")
    return name.rstrip(".") if colon and port.isdigit() else host.rstrip(".")


def host_allowed(scope: Any, allowed: Collection[str]) -> bool:
    """Whether the request's ``Host`` names this server (see the module doc); a request
    without one (HTTP/1.0) passes."""
    host = _header(scope, b"host")
    if not host or "*" in allowed:
        return True
    name = host_name(host)
    if name in LOOPBACK or name in allowed:
        return True
    server = scope.get("server")
    if server:
        local = str(server[0]).lower()
        return name == (f"[{local}]" if ":" in local else local)
    return False


def cross_site(scope: Any, origins: Collection[str]) -> bool:
    """Whether a browser says another site sent this request, and nothing allows it."""
    media = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
    if media == JSON_TYPE:
        return False
    origin = _header(scope, b"origin").rstrip("/")
    if origin and ("*" in origins or origin in origins):
        return False
    site = _header(scope, b"sec-fetch-site").strip().lower()
    if site:
        return site in ("cross-site", "same-site")
    return bool(origin) and (origin == "null" or not _same_origin(scope, origin))


def _same_origin(scope: Any, origin: str) -> bool:
    """Whether ``origin`` is this server as the request reached it."""
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.lower() == _header(scope, b"host").strip().lower()
